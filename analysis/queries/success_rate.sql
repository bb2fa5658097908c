-- How often does each arch solve each task at each trained lag, over all its seeds and configurations (k of n, Wilson 95% interval)?
-- A seed counts when its training ran to the end, ran out of wall time (it still gets its final
-- evaluation) or diverged (a failure to solve, not a missing run); pruned, out-of-memory and
-- failed trials are not outcomes of training and are counted in `not_counted` instead. `solved` is the trainer's flag (L* at
-- least the trained lag). The interval is Wilson's score interval (Wilson 1927; Brown, Cai &
-- DasGupta 2001 recommend it over the normal interval for small n and p near 0 or 1), z = 1.96.
WITH runs AS (
    SELECT task, arch, lag, "window", regexp_replace(trial_id, '-s[0-9]+$', '') AS config,
           status IN ('completed', 'timeout', 'diverged') AS counted,
           status IN ('completed', 'timeout') AND coalesce(solved, false) AS ok
    FROM trials
), agg AS (
    SELECT task, arch, lag, "window",
           count(DISTINCT config) FILTER (WHERE counted) AS configs,
           count(*) FILTER (WHERE counted) AS n,
           count(*) FILTER (WHERE ok) AS k,
           count(*) FILTER (WHERE NOT counted) AS not_counted
    FROM runs
    GROUP BY ALL
), z AS (SELECT 1.959963984540054 AS z)
SELECT task, arch, lag, "window", configs, k, n,
       CASE WHEN n > 0 THEN k / n END AS p,
       -- clamped: at k = 0 or k = n the bound is 0 or 1 exactly, up to rounding
       CASE WHEN n > 0 THEN greatest(0.0, (k / n + z * z / (2 * n)) / (1 + z * z / n)
                            - z / (1 + z * z / n) * sqrt(k / n * (1 - k / n) / n + z * z / (4 * n * n))) END AS p_lo,
       CASE WHEN n > 0 THEN least(1.0, (k / n + z * z / (2 * n)) / (1 + z * z / n)
                            + z / (1 + z * z / n) * sqrt(k / n * (1 - k / n) / n + z * z / (4 * n * n))) END AS p_hi,
       not_counted
FROM agg, z
ORDER BY task, arch, lag, "window" NULLS FIRST
