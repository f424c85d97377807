-- borrow.lua takes first-borrow tokens from the rules' gate buckets of one
-- shard (store.BorrowStore.TakeFirstBorrows), the twin of
-- reservoir.GateBucket, which the embedded store runs; the store
-- conformance suite holds both to the same answers.
--
-- KEYS[1..n]: one hash per take, "t" the tokens, "at" when they were
-- counted (unix ms); absent: full. A rule taken twice appears twice.
-- ARGV[1] now, unix ms (the caller's clock, as the embedded store's);
-- ARGV[2] the most a bucket is kept, ms; ARGV[2 + i] the rate of take i,
-- tokens a second, positive and finite.
--
-- Returns per take 1 if it got a token, else 0.
local now = tonumber(ARGV[1])
local maxTTL = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[2 + i])
  local capacity = math.max(1, rate)
  local h = redis.call('HMGET', KEYS[i], 't', 'at')
  local tokens, at = tonumber(h[1]), tonumber(h[2])
  if not tokens or not at then
    tokens, at = capacity, now
  elseif now > at then
    tokens = tokens + rate * (now - at) / 1000
    at = now
  end
  tokens = math.min(tokens, capacity)
  if tokens >= 1 then
    tokens = tokens - 1
    out[i] = 1
  else
    out[i] = 0
  end
  -- Kept until full again, and a second more (GateBucket.TTL).
  local refill = math.ceil((capacity - tokens) / rate * 1000)
  local ttl = maxTTL
  if refill < maxTTL then
    ttl = math.min(math.max(refill, 0) + 1000, maxTTL)
  end
  redis.call('HSET', KEYS[i], 't', string.format('%.17g', tokens), 'at', string.format('%.17g', at))
  redis.call('PEXPIRE', KEYS[i], ttl)
end
return out
