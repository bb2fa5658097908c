-- What power law memory_length = a * train_flops^alpha fits each arch's frontier (log-log least squares)?
-- Point estimates only; analysis/fit.py adds bootstrap intervals. L* = 0 has no logarithm, and a
-- censored L* is only a lower bound, so those frontier points are left out of the fit (n_censored
-- counts the latter); fewer than 3 distinct compute values give no numbers.
WITH logs AS (
    SELECT task, arch, train_flops, censored,
           CASE WHEN memory_length > 0 AND NOT censored THEN train_flops END AS fit_flops,
           ln(CASE WHEN memory_length > 0 AND NOT censored THEN memory_length END) AS y,
           ln(CASE WHEN memory_length > 0 AND NOT censored THEN train_flops END) AS x
    FROM frontier
)
SELECT task, arch,
       count(y) AS n,
       count(DISTINCT fit_flops) AS n_compute,
       CASE WHEN n_compute >= 3 THEN regr_slope(y, x) END AS alpha,
       CASE WHEN n_compute >= 3 THEN exp(regr_intercept(y, x)) END AS a,
       CASE WHEN n_compute >= 3 THEN regr_r2(y, x) END AS r2,
       min(fit_flops) AS min_flops,
       max(fit_flops) AS max_flops,
       count(*) FILTER (WHERE censored) AS n_censored,
       CASE WHEN n_compute < 3 THEN 'too few points' END AS note
FROM logs
GROUP BY task, arch
ORDER BY task, arch
