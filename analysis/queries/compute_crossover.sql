-- Above what training compute does one arch's fitted power law overtake another's (every ordered pair with a steeper exponent)?
-- a1*C^alpha1 = a2*C^alpha2  =>  ln C = (ln a2 - ln a1) / (alpha1 - alpha2); for alpha1 > alpha2 the
-- first arch is ahead above C. inside_data says whether C lies where both fits have frontier points.
SELECT p.task, p.arch, q.arch AS other, p.alpha, q.alpha AS other_alpha,
       exp((ln(q.a) - ln(p.a)) / (p.alpha - q.alpha)) AS crossover_flops,
       p.a * pow(crossover_flops, p.alpha) AS memory_length_at_crossover,
       crossover_flops BETWEEN greatest(p.min_flops, q.min_flops) AND least(p.max_flops, q.max_flops)
           AS inside_data
FROM power_law p
JOIN power_law q ON p.task = q.task AND p.arch <> q.arch
WHERE p.alpha > q.alpha
ORDER BY p.task, p.arch, q.arch
