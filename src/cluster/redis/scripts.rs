//! Lua scripts that keep cluster-wide presence and occupancy consistent. Each touches keys of one
//! hash slot (they share a `{app:channel}` or `{app}` hash tag), so they also run on Redis Cluster.
//!
//! Both use the same idempotent shape: a hash of `item NUL node` fields records which node holds
//! what, and a counter per item says how many nodes do. Re-announcing after a reconnect does not
//! double-count, and removing a dead node's fields finds exactly what it held.

use redis::Script;

/// KEYS: refs, members, counts. ARGV: user, node, user_info ("" for none), max members, "1" to
/// have the member list back. Returns {first (1/0, or -1 when full), {user, info, ...} or {}}.
pub fn presence_join() -> Script {
    Script::new(
        r#"
local present = redis.call('HEXISTS', KEYS[2], ARGV[1])
if present == 0 and redis.call('HLEN', KEYS[2]) >= tonumber(ARGV[4]) then
  return {-1, {}}
end
if redis.call('HSET', KEYS[1], ARGV[1] .. '\0' .. ARGV[2], 1) == 1 then
  redis.call('HINCRBY', KEYS[3], ARGV[1], 1)
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
local first = 0
if present == 0 then first = 1 end
if ARGV[5] ~= '1' then return {first, {}} end
return {first, redis.call('HGETALL', KEYS[2])}
"#,
    )
}

/// KEYS: refs, members, counts. ARGV: user, node. Returns 1 when the user is gone from the channel.
pub fn presence_leave() -> Script {
    Script::new(
        r#"
if redis.call('HDEL', KEYS[1], ARGV[1] .. '\0' .. ARGV[2]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[3], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"#,
    )
}

/// KEYS: holders, counts. ARGV: channel, node. Returns 1 when this is the first node holding it.
pub fn occupy() -> Script {
    Script::new(
        r#"
if redis.call('HSET', KEYS[1], ARGV[1] .. '\0' .. ARGV[2], 1) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[2], ARGV[1], 1) == 1 then return 1 end
return 0
"#,
    )
}

/// KEYS: holders, counts. ARGV: channel, node. Returns 1 when no node holds it any more.
pub fn vacate() -> Script {
    Script::new(
        r#"
if redis.call('HDEL', KEYS[1], ARGV[1] .. '\0' .. ARGV[2]) == 0 then return 0 end
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 1
end
return 0
"#,
    )
}

/// KEYS: a node's subscription-count hash. ARGV: channel, delta. Drops the field at zero.
pub fn count_delta() -> Script {
    Script::new(
        r#"
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], tonumber(ARGV[2]))
if n <= 0 then redis.call('HDEL', KEYS[1], ARGV[1]) end
return n
"#,
    )
}

/// The Lua function both history scripts trim a stream's expired entries with (a script cannot
/// call another's functions, so each carries it).
macro_rules! expire_stream {
    () => {
        r#"
-- Trims entries older than `cutoff` ms up to the newest of them, which stays as the floor; the
-- cheap look at the first entry skips the search while nothing has expired.
local function expire(key, cutoff)
  local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1]
  if first == nil or tonumber(string.match(first[1], '^(%d+)')) >= cutoff then return end
  local old = redis.call('XREVRANGE', key, '(' .. cutoff .. '-0', '-', 'COUNT', 1)
  if #old > 0 then redis.call('XTRIM', key, 'MINID', old[1][1]) end
end
"#
    };
}

/// Appends a batch's history events to their streams and publishes the whole batch as one
/// message, each history record carrying the id its stream gave it: the one round trip of a batch.
/// A stream begins with a marker entry (its floor) and keeps `size` events after its first entry
/// (exact `MAXLEN`, so it is the same count as a single node's ring); entries older than the TTL
/// are trimmed up to the newest of them, which stays as the floor.
///
/// KEYS: the batch's history streams. ARGV[1]: the bus channel; then per record either
/// `r`, record bytes, or `h`, key index, size, TTL ms, header head (ends `"p":"`), frame head (the
/// frame without its closing brace). Returns the number of records published.
pub fn history_publish() -> Script {
    Script::new(concat!(
        expire_stream!(),
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local out = {}
local i = 2
while i <= #ARGV do
  if ARGV[i] == 'r' then
    out[#out + 1] = ARGV[i + 1]
    i = i + 2
  else
    local key = KEYS[tonumber(ARGV[i + 1])]
    local size = tonumber(ARGV[i + 2])
    local ttl = tonumber(ARGV[i + 3])
    if redis.call('EXISTS', key) == 0 then redis.call('XADD', key, '*', 'm', '1') end
    local id = redis.call('XADD', key, 'MAXLEN', size + 1, '*', 'b', ARGV[i + 5])
    expire(key, now - ttl)
    redis.call('PEXPIRE', key, ttl)
    out[#out + 1] = ARGV[i + 4] .. id .. '"}\n' .. ARGV[i + 5] .. ',"position":"' .. id .. '"}'
    i = i + 6
  end
end
if #out == 1 then
  redis.call('PUBLISH', ARGV[1], out[1])
else
  local parts = {'M'}
  for _, r in ipairs(out) do parts[#parts + 1] = struct.pack('>I4', #r) .. r end
  redis.call('PUBLISH', ARGV[1], table.concat(parts))
end
return #out
"#
    ))
}

/// Reads a history stream (made with its marker when missing, so a reader has a floor to start
/// from), after trimming what the TTL expired. KEYS[1]: the stream. ARGV: the position to read
/// after (`''`: the newest), limit, TTL ms. Returns {first id, last id, id, frame head, ...},
/// oldest first after a position, newest first without one; never the first entry (the floor).
pub fn history_read() -> Script {
    Script::new(concat!(
        expire_stream!(),
        r#"
local key = KEYS[1]
local ttl = tonumber(ARGV[3])
if redis.call('EXISTS', key) == 0 then
  redis.call('XADD', key, '*', 'm', '1')
  redis.call('PEXPIRE', key, ttl)
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
expire(key, now - ttl)
local first = redis.call('XRANGE', key, '-', '+', 'COUNT', 1)[1][1]
local last = redis.call('XREVRANGE', key, '+', '-', 'COUNT', 1)[1][1]
local limit = tonumber(ARGV[2])
local entries
if ARGV[1] == '' then
  entries = redis.call('XREVRANGE', key, '+', '(' .. first, 'COUNT', limit + 1)
else
  entries = redis.call('XRANGE', key, '(' .. ARGV[1], '+', 'COUNT', limit + 1)
end
local out = {first, last}
for _, e in ipairs(entries) do
  if e[2][1] == 'b' then
    out[#out + 1] = e[1]
    out[#out + 1] = e[2][2]
  end
end
return out
"#
    ))
}
