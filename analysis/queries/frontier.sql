-- Which trials are on each arch's memory/compute frontier (no trial of the arch reaches at least their memory length with at most their training FLOPs)?
-- Per (task, arch): completed or pruned trials with a measured memory length. A trial is on the
-- frontier when its memory length beats every cheaper trial's and is the best at its own compute;
-- a running max over compute finds them in one pass instead of an n^2 anti-join. A censored trial
-- (memory_length only a lower bound) can be on the frontier: its bound already beats the others.
WITH done AS (
    SELECT task, arch, trial_id, cell, train_flops, memory_length, status,
           coalesce(censored, false) AS censored
    FROM trials
    WHERE status IN ('completed', 'pruned') AND train_flops > 0 AND memory_length IS NOT NULL
), per_flops AS (
    SELECT task, arch, train_flops, max(memory_length) AS best
    FROM done
    GROUP BY ALL
), running AS (
    SELECT *, max(best) OVER (PARTITION BY task, arch ORDER BY train_flops
                              ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS best_cheaper
    FROM per_flops
)
SELECT d.task, d.arch, d.trial_id, d.cell, d.train_flops, d.memory_length, d.status, d.censored
FROM done d
JOIN running r USING (task, arch, train_flops)
WHERE d.memory_length = r.best AND (r.best_cheaper IS NULL OR d.memory_length > r.best_cheaper)
ORDER BY d.task, d.arch, d.train_flops, d.trial_id
