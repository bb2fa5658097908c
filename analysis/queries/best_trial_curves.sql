-- What score-vs-lag curve does the best trial of each cell reach at its final evaluation?
-- Best: longest memory length, then lowest final loss; infeasible lags stay in (feasible = false).
-- distance: the dependency distance scored at each ladder lag, the unit of memory_length.
WITH best AS (
    SELECT cell, task, arch, lag AS cell_lag, "window", trial_id, memory_length, tau,
           coalesce(censored, false) AS censored
    FROM trials
    WHERE memory_length IS NOT NULL
    QUALIFY row_number() OVER (PARTITION BY cell
                               ORDER BY memory_length DESC, final_loss ASC NULLS LAST, trial_id) = 1
)
SELECT b.cell, b.task, b.arch, b.cell_lag, b."window", b.trial_id, b.memory_length, b.tau, b.censored,
       c.iteration, c.step, c.lag, coalesce(c.distance, c.lag) AS distance, c.score, c.score_lo,
       c.score_hi, c.feasible
FROM best b
JOIN lag_curves c ON c.trial_id = b.trial_id
QUALIFY c.iteration = max(c.iteration) OVER (PARTITION BY c.trial_id)
ORDER BY b.task, b.arch, b.cell_lag, b."window" NULLS LAST, c.lag
