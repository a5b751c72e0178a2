-- ARGV: key prefix, inventory, lock ttl ms, now ms
return promote(ARGV[1], ARGV[2], ARGV[3], ARGV[4]) or ''
