-- feature_layer online layout v1: write a batch of values, never letting an older one win.
-- KEYS[i]: one key per (view, entity); ARGV[1]: writer clock (us since epoch); ARGV[2]: TTL
-- in us (0 = none); ARGV[2 + i]: the value for KEYS[i] (u8 version | i64 event_us |
-- i64 created_us | ...). A value replaces the stored one only when its (event_us, created_us)
-- is >= the stored pair, so late data, reruns and overlapping runs can never move a key back
-- in time. With a TTL the key expires when its value does (event_us + ttl on the writer's
-- clock); values already expired are not written. Returns {written, kept_newer, expired}.
local now = tonumber(ARGV[1])
local ttl = tonumber(ARGV[2])
local n = #KEYS
local written, kept, expired = 0, 0, 0
for s = 1, n, 1000 do
  local e = math.min(s + 999, n)
  local olds = redis.call('MGET', unpack(KEYS, s, e))
  for i = s, e do
    local new = ARGV[i + 2]
    local nev, ncr = struct.unpack('<i8i8', new, 2)
    local old = olds[i - s + 1]
    local ok = true
    if old and string.byte(old, 1) == 1 then
      local oev, ocr = struct.unpack('<i8i8', old, 2)
      if oev > nev or (oev == nev and ocr > ncr) then ok = false end
    end
    if not ok then
      kept = kept + 1
    elseif ttl > 0 then
      local px = math.floor((nev + ttl - now) / 1000)
      if px > 0 then
        redis.call('SET', KEYS[i], new, 'PX', px)
        written = written + 1
      else
        expired = expired + 1
      end
    else
      redis.call('SET', KEYS[i], new)
      written = written + 1
    end
  end
end
return {written, kept, expired}
