-- token.lua creates or revokes a token together with its indexes, the
-- tokens version and the change notification, so that no replica sees a
-- token without its index entries or a version that does not match.
--
-- KEYS[1] hash: token name -> token JSON
-- KEYS[2] counter: tokens version
-- KEYS[3] hash: bearer token hash -> token name
-- KEYS[4] hash: AWS access key ID -> token name
-- KEYS[5] string: this call's own key, set once the change is applied, so
--         that the same call sent again (go-redis does after a read
--         timeout) answers as the first run did
-- ARGV[1] op: create or revoke
-- ARGV[2] token name
-- ARGV[3] create: the token's JSON; revoke: the revoke time
-- ARGV[4] create: tokens that ended before this time are pruned first;
--         revoke: the actor
-- ARGV[5] create: most tokens kept
-- ARGV[6] change notification channel
-- ARGV[7] how long KEYS[5] is kept, in milliseconds
--
-- Returns {0, token JSON} on success, or {status}: 1 not found, 2 already
-- exists (name, hash or access key), 5 too many tokens. Times in the JSON
-- are fixed-width UTC strings, so they compare as strings.

local OK, NOT_FOUND, EXISTS, LIMIT = 0, 1, 2, 5
local op, name = ARGV[1], ARGV[2]

local done = redis.call('GET', KEYS[5])
if done then return {OK, done} end

local function ended_before(t, cut)
  local rv, ex = t.revoke_time or '', t.expire_time or ''
  return (rv ~= '' and rv < cut) or (ex ~= '' and ex < cut)
end

local out
if op == 'create' then
  local all = redis.call('HGETALL', KEYS[1])
  for i = 1, #all, 2 do
    local t = cjson.decode(all[i + 1])
    if ended_before(t, ARGV[4]) then
      redis.call('HDEL', KEYS[1], all[i])
      if t.hash then redis.call('HDEL', KEYS[3], t.hash) end
      if t.access_key_id then redis.call('HDEL', KEYS[4], t.access_key_id) end
    end
  end
  if redis.call('HEXISTS', KEYS[1], name) == 1 then return {EXISTS} end
  local t = cjson.decode(ARGV[3])
  if t.hash and redis.call('HEXISTS', KEYS[3], t.hash) == 1 then return {EXISTS} end
  if t.access_key_id and redis.call('HEXISTS', KEYS[4], t.access_key_id) == 1 then return {EXISTS} end
  if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then return {LIMIT} end
  out = ARGV[3]
  if t.hash then redis.call('HSET', KEYS[3], t.hash, name) end
  if t.access_key_id then redis.call('HSET', KEYS[4], t.access_key_id, name) end
elseif op == 'revoke' then
  local cur = redis.call('HGET', KEYS[1], name)
  if not cur then return {NOT_FOUND} end
  local t = cjson.decode(cur)
  if t.revoke_time and t.revoke_time ~= '' then return {OK, cur} end
  t.revoke_time, t.revoked_by = ARGV[3], ARGV[4]
  out = cjson.encode(t)
else
  return redis.error_reply('token.lua: unknown op ' .. op)
end

redis.call('HSET', KEYS[1], name, out)
redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[5], out, 'PX', ARGV[7])
redis.call('PUBLISH', ARGV[6], 'tokens')
return {OK, out}
