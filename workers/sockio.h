/*
 * sockio.h -- non-blocking writes and reads on a connection the worker
 * took over from libcurl (curlio.h, keep_socket): the SMTP transport's
 * pipelined path and the HTTP transport's direct path.
 *
 *   wk_sock_write(fd, out, pos)  write out[*pos..len) until done or the
 *                                socket is full; *pos advances.
 *   wk_sock_read(fd, in, got)    append what the socket has now to `in`,
 *                                WK_SOCK_CHUNK bytes per recv, stopping at
 *                                the first short read; *got tells whether
 *                                any byte came.
 *
 * Both return WK_IO_OK (go on, poll again when needed), WK_IO_EOF (read:
 * the peer closed, after the bytes appended) or WK_IO_ERR (the connection
 * failed).  SIGPIPE is never raised (MSG_NOSIGNAL).
 *
 * Thread safety: the caller's; no state here.
 */
#ifndef HERALD_WORKERS_SOCKIO_H
#define HERALD_WORKERS_SOCKIO_H

#include <errno.h>
#include <stdbool.h>
#include <sys/socket.h>

#include "buf.h"

#define WK_SOCK_CHUNK 4096

typedef enum wk_io { WK_IO_OK, WK_IO_EOF, WK_IO_ERR } wk_io;

static inline wk_io wk_sock_write(int fd, const wk_buf *out, size_t *pos)
{
	while (*pos < out->len) {
		ssize_t n = send(fd, out->p + *pos, out->len - *pos, MSG_NOSIGNAL);
		if (n > 0) {
			*pos += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		return WK_IO_ERR;
	}
	return WK_IO_OK;
}

static inline wk_io wk_sock_read(int fd, wk_buf *in, bool *got)
{
	*got = false;
	for (;;) {
		wk_buf_grow(in, WK_SOCK_CHUNK);
		ssize_t n = recv(fd, in->p + in->len, WK_SOCK_CHUNK, 0);
		if (n > 0) {
			in->len += (size_t)n;
			*got = true;
			if (n == WK_SOCK_CHUNK)
				continue;
			return WK_IO_OK;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return WK_IO_OK;
		return n == 0 ? WK_IO_EOF : WK_IO_ERR;
	}
}

#endif
