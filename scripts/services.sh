# Shared by scripts/test and .ci/run: make sure Postgres and Redis answer, starting them when
# nothing listens, and that Chromium is there for the console's browser test. Exports TEST_DATABASE_URL and TEST_REDIS_URL for the test harness.
# Source it; it defines functions only.

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 100); do
    listening "$port" && return 0
    sleep 0.2
  done
  echo "error: $what did not start on port $port" >&2
  return 1
}

# Runs a command as the postgres user when we are root (Postgres refuses to run as root).
as_postgres() {
  if [ "$(id -u)" = 0 ]; then
    if command -v runuser >/dev/null; then runuser -u postgres -- "$@"; else su postgres -s /bin/sh -c "$*"; fi
  else
    "$@"
  fi
}

pg_bin() {
  command -v "$1" 2>/dev/null && return 0
  ls -d /usr/lib/postgresql/*/bin/"$1" 2>/dev/null | sort -V | tail -n 1
}

ensure_postgres() {
  if [ -n "${TEST_DATABASE_URL:-}" ]; then return 0; fi
  if listening 5432; then
    export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
    return 0
  fi
  local initdb pg_ctl port dir
  initdb=$(pg_bin initdb); pg_ctl=$(pg_bin pg_ctl)
  if [ -z "$initdb" ] || [ -z "$pg_ctl" ]; then
    echo "error: no PostgreSQL on 127.0.0.1:5432 and no initdb/pg_ctl to start one (apt install postgresql)" >&2
    return 1
  fi
  port=$(free_port)
  dir=$(mktemp -d /tmp/cgw-pg.XXXXXX)
  [ "$(id -u)" = 0 ] && chown postgres "$dir"
  echo "starting a throwaway PostgreSQL on port $port" >&2
  as_postgres "$initdb" -D "$dir/data" -U postgres -A trust --no-sync >/dev/null
  as_postgres "$pg_ctl" -D "$dir/data" -l "$dir/log" -w start \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300" >/dev/null
  CGW_CLEANUP="${CGW_CLEANUP:-} as_postgres $pg_ctl -D $dir/data -m immediate stop >/dev/null 2>&1; rm -rf $dir;"
  export TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
}

ensure_redis() {
  if [ -n "${TEST_REDIS_URL:-}" ]; then return 0; fi
  if listening 6379; then
    export TEST_REDIS_URL="redis://127.0.0.1:6379"
    return 0
  fi
  if ! command -v redis-server >/dev/null; then
    echo "error: no Redis on 127.0.0.1:6379 and no redis-server to start one (apt install redis-server)" >&2
    return 1
  fi
  local port dir
  port=$(free_port)
  dir=$(mktemp -d /tmp/cgw-redis.XXXXXX)
  echo "starting a throwaway Redis on port $port" >&2
  redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
    --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/log" >/dev/null
  wait_for_port "$port" Redis
  CGW_CLEANUP="${CGW_CLEANUP:-} kill \$(cat $dir/redis.pid) 2>/dev/null; rm -rf $dir;"
  export TEST_REDIS_URL="redis://127.0.0.1:$port"
}

# The console's browser test drives Debian's chromium through chromium-driver (the two must be
# the same version, so they are installed together), with a CJK font for the Chinese pages.
ensure_browser() {
  if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then return 0; fi
  local packages="chromium chromium-driver fonts-wqy-microhei"
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: the browser test needs Chromium and its driver: apt-get install $packages" >&2
    return 1
  fi
  echo "installing $packages (the console's browser test)" >&2
  export DEBIAN_FRONTEND=noninteractive
  # shellcheck disable=SC2086
  apt-get install -y -q $packages >/dev/null ||
    { apt-get update -q >/dev/null && apt-get install -y -q $packages >/dev/null; }
}

cleanup_services() { eval "${CGW_CLEANUP:-true}"; }
