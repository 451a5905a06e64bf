-- The body of a measurement variant: benchmarks/write_script_cost.py puts the shipped script's
-- head (feature_layer/online/write_latest.lua up to `local now`: arguments, fence, ledger) before it.
local CHUNK = 3000
local now = tonumber(ARGV[5])
local ttl = tonumber(ARGV[6])
local unpack_, byte, floor = struct.unpack, string.byte, math.floor
local written, kept, expired = 0, 0, 0
for lo = 1, n, CHUNK do
  local hi = math.min(n, lo + CHUNK - 1)
  local olds = call('MGET', unpack(KEYS, lo + 2, hi + 2))
  local pairs_, m = {}, 0
  for i = lo, hi do
    local key, new = KEYS[i + 2], ARGV[i + 6]
    local old = olds[i - lo + 1]
    local win = true
    if old and old ~= new and byte(old, 1) == 1 then
      local oev, ocr = unpack_('<i8i8', old, 2)
      local nev, ncr = unpack_('<i8i8', new, 2)
      win = not (oev > nev or (oev == nev and ocr > ncr))
    end
    if win then
      m = m + 2
      pairs_[m - 1] = key
      pairs_[m] = new
      written = written + 1
    else
      kept = kept + 1
    end
  end
  if m > 0 then call('MSET', unpack(pairs_, 1, m)) end
end
return {written, kept, expired, ledger_ok}
