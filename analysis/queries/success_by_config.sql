-- For each configuration (cell and slot: same hyperparameters, different seeds), how many seeds solved it (Wilson 95% interval), and how far does L* spread over its seeds?
-- Counting rule and interval as success_rate.sql. L* over the seeds with a final evaluation
-- (completed or timed out): median, min and
-- max (with three to five seeds a percentile bootstrap interval is no better than the range);
-- `lstar_censored` counts seeds whose L* is only a lower bound, so a median among them is one too.
WITH runs AS (
    SELECT cell, task, arch, lag, "window", regexp_replace(trial_id, '-s[0-9]+$', '') AS config, seed,
           memory_length, coalesce(censored, false) AS censored, status,
           status IN ('completed', 'timeout', 'diverged') AS counted,
           status IN ('completed', 'timeout') AND coalesce(solved, false) AS ok
    FROM trials
), agg AS (
    SELECT cell, config, task, arch, lag, "window",
           count(*) FILTER (WHERE counted) AS n,
           count(*) FILTER (WHERE ok) AS k,
           count(*) FILTER (WHERE NOT counted) AS not_counted,
           median(memory_length) FILTER (WHERE status IN ('completed', 'timeout')) AS lstar_median,
           min(memory_length) FILTER (WHERE status IN ('completed', 'timeout')) AS lstar_min,
           max(memory_length) FILTER (WHERE status IN ('completed', 'timeout')) AS lstar_max,
           count(*) FILTER (WHERE status IN ('completed', 'timeout') AND censored) AS lstar_censored,
           list(seed ORDER BY seed) AS seeds
    FROM runs
    GROUP BY ALL
), z AS (SELECT 1.959963984540054 AS z)
SELECT cell, config, task, arch, lag, "window", k, n,
       CASE WHEN n > 0 THEN k / n END AS p,
       -- clamped: at k = 0 or k = n the bound is 0 or 1 exactly, up to rounding
       CASE WHEN n > 0 THEN greatest(0.0, (k / n + z * z / (2 * n)) / (1 + z * z / n)
                            - z / (1 + z * z / n) * sqrt(k / n * (1 - k / n) / n + z * z / (4 * n * n))) END AS p_lo,
       CASE WHEN n > 0 THEN least(1.0, (k / n + z * z / (2 * n)) / (1 + z * z / n)
                            + z / (1 + z * z / n) * sqrt(k / n * (1 - k / n) / n + z * z / (4 * n * n))) END AS p_hi,
       lstar_median, lstar_min, lstar_max, lstar_censored, not_counted, seeds
FROM agg, z
ORDER BY task, arch, lag, "window" NULLS FIRST, config
