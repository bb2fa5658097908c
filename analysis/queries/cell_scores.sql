-- What normalised score does each cell's best trial reach at the cell's own lag (its final evaluation), and how many trials were infeasible there?
-- Infeasible: the trial ran out of memory or time, or its final curve marks that lag infeasible.
WITH final AS (
    SELECT trial_id, lag, score, feasible
    FROM lag_curves
    QUALIFY iteration = max(iteration) OVER (PARTITION BY trial_id)
)
SELECT t.task, t.arch, t.lag, t."window", t.cell,
       count(*) AS trials,
       count(f.score) AS scored,
       count(*) FILTER (WHERE t.status IN ('oom', 'timeout') OR f.feasible = false) AS infeasible,
       max(f.score) AS best_score,
       arg_max(t.trial_id, f.score) AS best_trial
FROM trials t
LEFT JOIN final f ON f.trial_id = t.trial_id AND f.lag = t.lag
GROUP BY t.task, t.arch, t.lag, t."window", t.cell
ORDER BY t.task, t.arch, t.lag, t."window" NULLS LAST
