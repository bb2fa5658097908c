-- What does one training sequence cost (wall seconds, peak memory) at each seq_len, per arch, and where did trials run out of memory or time?
-- Sequences trained = tokens / seq_len; sequences per step (the batch) = tokens / (steps * seq_len).
-- Memory is the training step's peak tensor bytes; studies from before that column fall back to the resident peak.
SELECT arch || CASE WHEN "window" IS NULL THEN '' ELSE ' @window ' || "window" END AS arch, seq_len,
       count(*) FILTER (WHERE status IN ('completed', 'pruned')) AS trials,
       median(wall_s * seq_len / tokens) FILTER (WHERE status IN ('completed', 'pruned') AND tokens > 0)
           AS wall_s_per_seq,
       median(coalesce(peak_tensor_bytes, peak_mem_bytes) * steps * seq_len / tokens) FILTER (WHERE status IN ('completed', 'pruned') AND tokens > 0)
           AS peak_mem_bytes_per_seq,
       count(*) FILTER (WHERE status = 'oom') AS oom,
       count(*) FILTER (WHERE status = 'timeout') AS timeout
FROM trials
WHERE seq_len IS NOT NULL
GROUP BY ALL
ORDER BY arch, seq_len
