/*
 * bindlo.so - LD_PRELOAD shim for test peers: turn wildcard binds into loopback binds.
 *
 * Why: baresip 1.0 binds its RTP/RTCP sockets to 0.0.0.0 ("we listen on all interfaces" in
 * src/stream.c, no config option) and its DNS client sockets to 0.0.0.0 / [::], even with
 * net_interface 127.0.0.1. The test rig must only ever listen on loopback, so bind() calls for
 * INADDR_ANY become 127.0.0.1 and those for in6addr_any become ::1; every other bind is untouched.
 * Built on demand by tests/rig/shim.py (gcc -shared -fPIC bindlo.c -ldl).
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

typedef int (*bind_fn)(int, const struct sockaddr *, socklen_t);

int bind(int fd, const struct sockaddr *addr, socklen_t len)
{
	static bind_fn real_bind;

	if (!real_bind)
		real_bind = (bind_fn)dlsym(RTLD_NEXT, "bind");

	if (addr && addr->sa_family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
		struct sockaddr_in sin;

		memcpy(&sin, addr, sizeof(sin));
		if (sin.sin_addr.s_addr == htonl(INADDR_ANY)) {
			sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			return real_bind(fd, (const struct sockaddr *)&sin, sizeof(sin));
		}
	}
	else if (addr && addr->sa_family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 sin6;

		memcpy(&sin6, addr, sizeof(sin6));
		if (IN6_IS_ADDR_UNSPECIFIED(&sin6.sin6_addr)) {
			sin6.sin6_addr = in6addr_loopback;
			return real_bind(fd, (const struct sockaddr *)&sin6, sizeof(sin6));
		}
	}

	return real_bind(fd, addr, len);
}
