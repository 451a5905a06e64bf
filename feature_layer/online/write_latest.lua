-- feature_layer online layout v1: write a batch of values, never letting an older one win.
-- KEYS[i]: one key per (view, entity); ARGV[1]: writer clock (us since epoch); ARGV[2]: TTL
-- in us (0 = none); ARGV[3]: "1" to force (a full refresh: the value replaces whatever is
-- stored, and an already expired value deletes the key), else "0"; ARGV[3 + i]: the value for
-- KEYS[i] (u8 version | i64 event_us | i64 created_us | ...); with a TTL, ARGV[3 + n + i]: the
-- key's expiry for KEYS[i] (n = #KEYS), computed by the writer from the same clock and TTL as
-- max(1, ceil((event_us + ttl - clock) / 1000)) ms, as a ready decimal string, or "-" when the
-- value is already expired (event_us + ttl < clock) and must not be written. A value replaces
-- the stored one only when its (event_us, created_us) is >= the stored pair, so late data,
-- reruns and overlapping runs can never move a key back in time. With a TTL the key expires
-- when its value does (event_us + ttl on the writer's clock); values already expired are not
-- written. Returns {written, kept_newer, expired}.
--
-- Each key costs one SET ... GET: the common case (the new value is newer) is then a single
-- call, and in the rare case that the stored value was newer it is put back, with the expiry
-- its own event time gives it. The script runs atomically, so no reader sees the swap.
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local n = #KEYS
local call, unpack_, byte, floor = redis.call, struct.unpack, string.byte, math.floor
local written, kept, expired = 0, 0, 0
if ARGV[3] == '1' then
  for i = 1, n do
    local key, new = KEYS[i], ARGV[i + 3]
    if ttl > 0 then
      local px = ARGV[i + 3 + n]
      if px ~= '-' then
        call('SET', key, new, 'PX', px)
        written = written + 1
      else
        call('DEL', key)
        expired = expired + 1
      end
    else
      call('SET', key, new)
      written = written + 1
    end
  end
  return {written, kept, expired}
end
for i = 1, n do
  local key, new = KEYS[i], ARGV[i + 3]
  local old
  if ttl > 0 then
    local px = ARGV[i + 3 + n]  -- "-": expired (live while event >= now - ttl, inclusive)
    if px ~= '-' then old = call('SET', key, new, 'PX', px, 'GET') end
  else
    old = call('SET', key, new, 'GET')
  end
  if old == nil then
    expired = expired + 1
  elseif old == new then  -- the same bytes (a rerun): the same pair, so the write stands
    written = written + 1
  elseif old and byte(old, 1) == 1 then
    local oev, ocr = unpack_('<i8i8', old, 2)
    local nev, ncr = unpack_('<i8i8', new, 2)
    if oev > nev or (oev == nev and ocr > ncr) then
      kept = kept + 1
      if ttl > 0 then
        call('SET', key, old, 'PX', math.max(1, floor((oev + ttl - now) / 1000)))
      else
        call('SET', key, old)
      end
    else
      written = written + 1
    end
  else
    written = written + 1
  end
end
return {written, kept, expired}
