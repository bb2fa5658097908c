-- How fast do wall seconds and peak memory per sequence grow with seq_len for each arch (log-log exponent: ~1 recurrent, ~2 full attention)?
-- Point estimates over completed/pruned trials; analysis/fit.py adds bootstrap intervals.
-- A windowed run is its own series ("transformer @window 64"): its cost should grow like recurrence's.
-- Memory is the training step's peak tensor bytes; studies from before that column fall back to the resident peak.
WITH per_trial AS (
    SELECT arch || CASE WHEN "window" IS NULL THEN '' ELSE ' @window ' || "window" END AS arch, seq_len,
           wall_s * seq_len / tokens AS wall_s_per_seq,
           coalesce(peak_tensor_bytes, peak_mem_bytes) * steps * seq_len / tokens AS peak_mem_bytes_per_seq
    FROM trials
    WHERE status IN ('completed', 'pruned') AND tokens > 0 AND steps > 0 AND seq_len > 0
          AND wall_s > 0 AND coalesce(peak_tensor_bytes, peak_mem_bytes) > 0
)
SELECT arch,
       count(*) AS n,
       count(DISTINCT seq_len) AS n_seq_len,
       CASE WHEN n_seq_len >= 3 THEN regr_slope(ln(wall_s_per_seq), ln(seq_len)) END AS time_exponent,
       CASE WHEN n_seq_len >= 3 THEN regr_r2(ln(wall_s_per_seq), ln(seq_len)) END AS time_r2,
       CASE WHEN n_seq_len >= 3 THEN regr_slope(ln(peak_mem_bytes_per_seq), ln(seq_len)) END AS mem_exponent,
       CASE WHEN n_seq_len >= 3 THEN regr_r2(ln(peak_mem_bytes_per_seq), ln(seq_len)) END AS mem_r2,
       CASE WHEN n_seq_len < 3 THEN 'too few points' END AS note
FROM per_trial
GROUP BY arch
ORDER BY arch
