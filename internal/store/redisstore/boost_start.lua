-- boost_start.lua starts a rule's boost if its last boost is still the one
-- the caller decided from (boost.Store.StartBoost): of the replicas that
-- decided a boost from the same State, one starts it.
--
-- KEYS[1] the rule's boost hash (see boost.lua). ARGV[1] the start of the
-- boost decided from, unix ms ("0": none), ARGV[2] the new boost's rate,
-- ARGV[3] its start and ARGV[4] its expiry (unix ms), ARGV[5] the hash's
-- TTL in ms.
--
-- Returns the boost after, rate, start and expiry, and "1" if it is the
-- new one ("0": another replica's, started first).
local cur = redis.call('HMGET', KEYS[1], 'rate', 'start', 'exp')
local rate, start = tonumber(cur[1]) or 0, tonumber(cur[2]) or 0
if rate <= 0 then start = 0 end
if start ~= tonumber(ARGV[1]) then
  return {cur[1] or '0', cur[2] or '0', cur[3] or '0', '0'}
end
redis.call('HSET', KEYS[1], 'rate', ARGV[2], 'start', ARGV[3], 'exp', ARGV[4], 'cap', '0')
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return {ARGV[2], ARGV[3], ARGV[4], '1'}
