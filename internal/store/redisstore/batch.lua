-- batch.lua applies a batch of rule edits in one atomic step, or none of
-- them: every edit is checked first, and only if all can be made are they
-- made, with one audit entry per rule, one rules version bump and one
-- change notification. It is edit.lua for many rules at once.
--
-- KEYS[1] hash: rule name -> rule JSON
-- KEYS[2] counter: rules version
-- KEYS[3] stream: audit log of all rules
-- KEYS[4] string: this call's own key (see edit.lua)
-- KEYS[4+i] stream: audit log of the rule of edit i
-- ARGV[1] actor
-- ARGV[2] time of the edits (RFC 3339)
-- ARGV[3] audit entries to keep per stream (trimmed approximately)
-- ARGV[4] change notification channel
-- ARGV[5] how long KEYS[4] is kept, in milliseconds
-- ARGV[6] the most rules KEYS[1] may hold
-- ARGV[7] the version of a first edit, when KEYS[2] does not exist
-- ARGV[8] the edits' message ("" for none)
-- ARGV[9] n, the number of edits; then per edit five values: op (create,
--         update or delete), rule name, the new JSON (create, update;
--         without its rules version, which the script appends), the
--         JSON as the caller read it (update), the revision the caller
--         expects (update; delete: 0 for any)
--
-- Returns {0, version, entry id 1, ..., entry id n} on success, or
-- {status, i} for the first edit i that cannot be made (the statuses of
-- edit.lua), or {5} if the batch would pass the rule limit. Each rule is
-- edited at most once; the caller checks that.

local OK, NOT_FOUND, EXISTS, CONFLICT, CHANGED, LIMIT = 0, 1, 2, 3, 4, 5

local done = redis.call('GET', KEYS[4])
if done then
  local out = {OK}
  for v in string.gmatch(done, '%S+') do
    table.insert(out, v)
  end
  out[2] = tonumber(out[2])
  return out
end

local n = tonumber(ARGV[9])
local curs = {}
local count = redis.call('HLEN', KEYS[1])
local grows = false
for i = 1, n do
  local a = 9 + (i - 1) * 5
  local op, name, read = ARGV[a + 1], ARGV[a + 2], ARGV[a + 4]
  local if_rev = tonumber(ARGV[a + 5])
  local cur = redis.call('HGET', KEYS[1], name)
  curs[i] = cur
  if op == 'create' then
    if cur then return {EXISTS, i} end
    count = count + 1
    grows = true
  else
    if not cur then return {NOT_FOUND, i} end
    local rev = cjson.decode(cur).revision
    if op == 'update' then
      if rev ~= if_rev then return {CONFLICT, i} end
      if cur ~= read then return {CHANGED, i} end
    elseif op == 'delete' then
      if if_rev ~= 0 and rev ~= if_rev then return {CONFLICT, i} end
      count = count - 1
    else
      return redis.error_reply('batch.lua: unknown op ' .. op)
    end
  end
end
local before = redis.call('HLEN', KEYS[1])
if grows and count > tonumber(ARGV[6]) and count > before then
  return {LIMIT}
end

if redis.call('INCR', KEYS[2]) == 1 then
  redis.call('SET', KEYS[2], ARGV[7])
end
-- Kept as a string: Lua's numbers would print a 16-digit version in
-- exponent notation.
local version = redis.call('GET', KEYS[2])

local out = {OK, tonumber(version)}
local ids = {version}
for i = 1, n do
  local a = 9 + (i - 1) * 5
  local op, name, new = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local cur = curs[i]
  if op == 'delete' then
    redis.call('HDEL', KEYS[1], name)
  else
    new = string.sub(new, 1, -2) .. ',"rules_version":' .. version .. '}'
    redis.call('HSET', KEYS[1], name, new)
  end
  local entry = {'rule', name, 'action', op, 'actor', ARGV[1], 'time', ARGV[2], 'version', version}
  if ARGV[8] ~= '' then
    table.insert(entry, 'message')
    table.insert(entry, ARGV[8])
  end
  if cur then
    table.insert(entry, 'before')
    table.insert(entry, cur)
  end
  if op ~= 'delete' then
    table.insert(entry, 'after')
    table.insert(entry, new)
  end
  local id = redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[3], '*', unpack(entry))
  redis.call('XADD', KEYS[4 + i], 'MAXLEN', '~', ARGV[3], id, unpack(entry))
  table.insert(out, id)
  table.insert(ids, id)
end
redis.call('SET', KEYS[4], table.concat(ids, ' '), 'PX', ARGV[5])
redis.call('PUBLISH', ARGV[4], 'rules')
return out
