SELECT name, severity, value, threshold, detail
FROM resync.alerts
ORDER BY CASE severity WHEN 'critical' THEN 0 ELSE 1 END, name
