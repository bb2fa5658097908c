-- At what lag does one arch overtake another (every ordered pair of archs, per task and window)?
-- Per (task, window, arch, lag): the best cell score at that lag (cell_scores). arch overtakes other
-- at crossover_lag when it scores strictly higher there and at every longer common lag, but not at
-- the common lag just below (behind_at_lag). A missing score (infeasible) loses to any score.
WITH perf AS (
    SELECT task, "window", arch, lag, max(best_score) AS score
    FROM cell_scores
    GROUP BY ALL
), pairs AS (
    SELECT a.task, a."window", a.arch, b.arch AS other, a.lag, a.score, b.score AS other_score,
           coalesce(a.score > b.score, a.score IS NOT NULL AND b.score IS NULL) AS ahead
    FROM perf a
    JOIN perf b ON a.task = b.task AND a."window" IS NOT DISTINCT FROM b."window"
                   AND a.lag = b.lag AND a.arch <> b.arch
), tail AS (
    SELECT *, bool_and(ahead) OVER (PARTITION BY task, "window", arch, other ORDER BY lag DESC
                                    ROWS UNBOUNDED PRECEDING) AS ahead_from_here
    FROM pairs
), per_pair AS (
    SELECT task, "window", arch, other,
           count(*) AS common_lags,
           min(lag) AS shortest_lag,
           min(lag) FILTER (WHERE ahead_from_here) AS first_ahead_lag,
           max(lag) FILTER (WHERE NOT ahead_from_here) AS behind_at_lag
    FROM tail
    GROUP BY ALL
)
SELECT task, "window", arch, other, common_lags,
       CASE WHEN behind_at_lag IS NOT NULL THEN first_ahead_lag END AS crossover_lag,
       CASE WHEN first_ahead_lag IS NOT NULL THEN behind_at_lag END AS behind_at_lag,
       CASE WHEN first_ahead_lag IS NULL THEN 'not ahead at the longest lag'
            WHEN behind_at_lag IS NULL THEN 'ahead at every lag'
            ELSE 'overtakes' END AS verdict
FROM per_pair
ORDER BY task, "window" NULLS LAST, arch, other
