-- borrow.lua takes first-borrow tokens from the rules' gate buckets of one
-- shard (store.BorrowStore.TakeFirstBorrows), the twin of
-- reservoir.GateBucket, which the embedded store runs; the store
-- conformance suite holds both to the same answers.
--
-- KEYS[1..n]: one hash per take, "t" the tokens, "at" when they were
-- counted (unix ms); absent: full. A rule taken twice appears twice.
-- ARGV[1] now, unix ms (the caller's clock, as the embedded store's);
-- ARGV[2] the most a bucket is kept, ms; ARGV[1 + 2i] the rate of take i,
-- tokens a second, positive and finite, and ARGV[2 + 2i] how many tokens
-- it asks for, 1 or more.
--
-- Returns per take how many tokens it got.
local now = tonumber(ARGV[1])
local maxTTL = tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local rate = tonumber(ARGV[1 + 2 * i])
  local want = tonumber(ARGV[2 + 2 * i])
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
  local k = math.min(want, math.floor(tokens))
  if k < 0 then k = 0 end
  tokens = tokens - k
  out[i] = k
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
