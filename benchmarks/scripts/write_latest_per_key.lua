-- The body of the write script before mat4 (one SET … GET per key), for comparison: the
-- benchmarks put the shipped script's head before it (write_script_cost.variant).
local now = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local unpack_, byte, floor = struct.unpack, string.byte, math.floor
local written, kept, expired = 0, 0, 0
if mode == 'f' then
  for i = 1, n do
    local key, new = KEYS[i + 2], ARGV[i + 6]
    if ttl > 0 then
      local px = ARGV[i + 6 + n]
      if px ~= '-' then
        call('SET', key, new, 'PX', px)
        written = written + 1
      else
        call('UNLINK', key)
        expired = expired + 1
      end
    else
      call('SET', key, new)
      written = written + 1
    end
  end
  return {written, kept, expired, ledger_ok}
end
for i = 1, n do
  local key, new = KEYS[i + 2], ARGV[i + 6]
  local old
  if ttl > 0 then
    local px = ARGV[i + 6 + n]  -- "-": expired (live while event >= now - ttl, inclusive)
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
return {written, kept, expired, ledger_ok}
