-- What is the largest lag each arch learns (solves) at each truncation window?
-- window is null for `full` (untruncated); window_label spells it out.
SELECT task, arch, "window",
       coalesce(CAST("window" AS VARCHAR), 'full') AS window_label,
       count(*) AS trials,
       count(*) FILTER (WHERE solved) AS solved_trials,
       max(lag) FILTER (WHERE solved) AS largest_lag_solved,
       max(lag) AS largest_lag_tried,
       max(memory_length) AS best_memory_length
FROM trials
GROUP BY task, arch, "window"
ORDER BY task, arch, "window" NULLS LAST
