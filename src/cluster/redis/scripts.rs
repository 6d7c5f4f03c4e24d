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
