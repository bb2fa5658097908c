-- What is the longest memory length each cell reached, and at what training compute?
SELECT cell, arch, task, lag, "window", count(*) AS trials,
       max(memory_length) AS best_memory_length,
       arg_max(train_flops, memory_length) AS train_flops_of_best,
       count(*) FILTER (WHERE solved) AS solved
FROM trials
GROUP BY ALL
ORDER BY arch, lag, "window"
