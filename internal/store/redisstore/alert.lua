-- alert.lua fires an alert once: if its "fired" mark is absent, the alert is
-- added to the list of all alerts and to its budget's, the mark is set and
-- the change published. As one script, two replicas firing the same alert at
-- the same instant cannot both add it.
--
-- KEYS[1] string: the alert's fired mark (its DedupKey), value the alert ID
-- KEYS[2] stream: all alerts
-- KEYS[3] stream: this budget's alerts (same entry IDs as KEYS[2])
-- KEYS[4] string: this call's own key, the new alert's ID once added, so
--         that the same call sent again (go-redis does after a read
--         timeout) returns that ID and the caller still delivers the alert
-- ARGV[1] the alert's JSON
-- ARGV[2] how long the mark is kept, in milliseconds
-- ARGV[3] entries to keep per stream (trimmed approximately)
-- ARGV[4] change notification channel
-- ARGV[5] how long KEYS[4] is kept, in milliseconds
--
-- Returns the new alert's ID, or nil if the alert fired before.

local done = redis.call('GET', KEYS[4])
if done then return done end
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local id = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', 'alert', ARGV[1])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], id, 'alert', ARGV[1])
redis.call('SET', KEYS[1], id, 'PX', ARGV[2])
redis.call('SET', KEYS[4], id, 'PX', ARGV[5])
redis.call('PUBLISH', ARGV[4], 'alerts')
return id
