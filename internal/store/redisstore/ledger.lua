-- ledger.lua applies one batch of client reports: fleet-ledger deltas, with
-- each ledger's sum returned, and budget usage increments. One script is one
-- round trip, and no replica sees half a batch.
--
-- KEYS[1..L]: one hash per rule, field = bucket index, value = sum of rates.
-- KEYS[L+1..N-1]: one hash per budget and month of usage, fields "r:<hour>" and
-- "s:<hour>" (requests and sampled in an hour of the month), "rr:<rule>"
-- and "rs:<rule>" (a rule's totals) and "rh:<hour>:<rule>" (a rule's
-- requests in an hour).
-- KEYS[N]: this call's own key.
-- ARGV[1] current bucket, ARGV[2] buckets that stay live, ARGV[3] ledger TTL
-- in ms, ARGV[4] L, ARGV[5] the call key's TTL in ms; then per ledger key, in KEYS order: the number of deltas
-- n, then n pairs of bucket and delta; then per usage key, in KEYS order:
-- its TTL in ms, the most fields it may hold (0: no limit; a field past it
-- that is not there yet is not added), the number of increments n, then n
-- pairs of field and increment.
--
-- The last key marks the batch as applied, for ARGV[5] ms: a client that
-- sends the script again (go-redis does after a read timeout, when the first
-- run may have happened) gets the sums without adding anything twice.
--
-- The caller has already netted every report of the batch into one delta per
-- rule and bucket and one increment per usage field, so the work here does
-- not grow with the number of reports.
local cur = tonumber(ARGV[1])
local oldest = cur - tonumber(ARGV[2]) + 1
local ttl = ARGV[3]
local nledgers = tonumber(ARGV[4])
local apply = redis.call('SET', KEYS[#KEYS], '1', 'NX', 'PX', ARGV[5])
local a = 6
local sums = {}
for k = 1, nledgers do
  local key = KEYS[k]
  local n = tonumber(ARGV[a])
  a = a + 1
  for j = 1, n do
    local b = ARGV[a]
    if apply then
      local left = tonumber(redis.call('HINCRBYFLOAT', key, b, ARGV[a + 1]))
      if left < 0 then
        redis.call('HSET', key, b, '0')
      end
    end
    a = a + 2
  end
  local all = redis.call('HGETALL', key)
  local sum = 0
  for j = 1, #all, 2 do
    local b = tonumber(all[j])
    -- Live as reservoir.Ledger.Live: the next bucket too, for replicas
    -- whose clocks run a little ahead.
    if b >= oldest and b <= cur + 1 then
      sum = sum + tonumber(all[j + 1])
    else
      redis.call('HDEL', key, all[j])
    end
  end
  redis.call('PEXPIRE', key, ttl)
  sums[k] = string.format('%.17g', sum)
end
if apply then
  for k = nledgers + 1, #KEYS - 1 do
    local key = KEYS[k]
    local keyttl = ARGV[a]
    local limit = tonumber(ARGV[a + 1])
    local n = tonumber(ARGV[a + 2])
    a = a + 3
    for j = 1, n do
      if limit == 0 or redis.call('HLEN', key) < limit or redis.call('HEXISTS', key, ARGV[a]) == 1 then
        redis.call('HINCRBY', key, ARGV[a], ARGV[a + 1])
      end
      a = a + 2
    end
    redis.call('PEXPIRE', key, keyttl)
  end
end
return sums
