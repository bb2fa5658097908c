-- How much does the outcome vary across seeds of the same configuration, per cell?
-- Trial ids are <cell>-t<slot>-s<seed> (study/sweep.py): every seed of a slot shares its hyperparameters.
WITH per_config AS (
    SELECT cell, task, arch, lag, "window", regexp_replace(trial_id, '-s[0-9]+$', '') AS config,
           count(*) AS seeds,
           avg(memory_length) AS mean_memory_length,
           stddev_samp(memory_length) AS sd_memory_length,
           max(memory_length) - min(memory_length) AS range_memory_length,
           avg(CAST(solved AS INTEGER)) AS solved_rate,
           stddev_samp(final_loss) AS sd_final_loss
    FROM trials
    WHERE status IN ('completed', 'pruned')
    GROUP BY ALL
)
SELECT cell, task, arch, lag, "window",
       count(*) AS configs,
       max(seeds) AS max_seeds,
       avg(mean_memory_length) AS mean_memory_length,
       avg(sd_memory_length) AS mean_sd_memory_length,
       max(range_memory_length) AS max_range_memory_length,
       avg(solved_rate) AS solved_rate,
       avg(sd_final_loss) AS mean_sd_final_loss
FROM per_config
GROUP BY cell, task, arch, lag, "window"
ORDER BY task, arch, lag, "window" NULLS LAST
