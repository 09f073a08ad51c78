/* The UDP side: the outbox that gathers datagrams into GSO sends (all of one destination
 * and size but the last, at most 64 and 64 KB a send) and sends them with sendmmsg, falling
 * back to one datagram per send where the kernel refuses GSO; and the receive of one GRO
 * batch with its segment size. The wire never changes: every datagram is an ordinary one of
 * at most the underlay MTU. backends/_datapath.py's _send, _queue, _flush and _on_net do the
 * same in Python.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdlib.h>
#include <sys/socket.h>
#include "fastpath.h"

#ifndef SOL_UDP
#define SOL_UDP 17
#endif
#define FP_UDP_SEGMENT 103
#define FP_UDP_GRO 104
#define MMSG_BATCH 64

uint32_t fp_per_send(uint32_t size)
{
    uint32_t n = FP_MAX_GSO_BYTES / (size ? size : 1);
    if (n > FP_MAX_SEGMENTS)
        n = FP_MAX_SEGMENTS;
    return n ? n : 1;
}

int fp_outbox_init(fp_outbox *out)
{
    out->buf = malloc(FP_OUTBOX_BYTES);
    out->msgs = calloc(FP_OUTBOX_MSGS, sizeof *out->msgs);
    out->used = 0;
    out->nmsgs = 0;
    return out->buf && out->msgs ? 0 : -1;
}

void fp_outbox_free(fp_outbox *out)
{
    free(out->buf);
    free(out->msgs);
    out->buf = NULL;
    out->msgs = NULL;
}

void fp_outbox_add(fp_outbox *o, int gso, int sock, const fp_route *route, size_t off,
                   size_t len, uint32_t stride)
{
    while (len) {
        uint32_t row = len < stride ? (uint32_t)len : stride;
        fp_msg *m = o->nmsgs ? &o->msgs[o->nmsgs - 1] : NULL;
        if (gso && m && m->open && m->sock == sock && m->ip == route->ip
            && m->port == route->port && row <= m->seg && m->count < fp_per_send(m->seg)
            && m->off + m->len == off) {
            m->len += row;
            m->count++;
            if (row < m->seg)  /* a short datagram can only be the last one */
                m->open = 0;
        } else {
            m = &o->msgs[o->nmsgs++];
            *m = (fp_msg){(uint32_t)off, row, row, 1, route->ip, route->port, (uint8_t)sock,
                          (uint8_t)gso};
        }
        off += row;
        len -= row;
    }
}

void fp_count_sent(fp_counters *c, const fp_msg *m)
{
    c->tx_packets += m->count;
    c->tx_bytes += m->len;
    if (m->count > 1) {
        c->gso_sends++;
        c->gso_segments += m->count;
    }
}

/* one send failed with `error`: count it, or (the kernel refusing GSO) send its datagrams
 * one by one, and every later datagram too */
static void send_failed(fp_udp *u, const fp_outbox *o, const fp_msg *m, int error,
                        fp_counters *c)
{
    if (error == EAGAIN || error == EWOULDBLOCK) {
        c->drops[FP_SOCKET_QUEUE_FULL] += m->count;
        return;
    }
    if (m->count > 1 && (error == EIO || error == EINVAL || error == ENOPROTOOPT)) {
        u->gso = 0;
        __atomic_store_n(&u->refused, 1, __ATOMIC_RELAXED);
        struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons(m->port),
                                 .sin_addr.s_addr = htonl(m->ip)};
        for (uint32_t at = 0; at < m->len; at += m->seg) {
            uint32_t size = m->len - at < m->seg ? m->len - at : m->seg;
            fp_msg one = {m->off + at, size, size, 1, m->ip, m->port, m->sock, 0};
            ssize_t r;
            do {
                r = sendto(u->fds[m->sock], o->buf + m->off + at, size, 0,
                           (struct sockaddr *)&to, sizeof to);
            } while (r < 0 && errno == EINTR);
            if (r < 0)
                send_failed(u, o, &one, errno, c);
            else
                fp_count_sent(c, &one);
        }
        return;
    }
    c->drops[FP_SEND_ERROR] += m->count;
}

void fp_udp_flush(fp_udp *u, fp_outbox *o, fp_counters *c)
{
    struct mmsghdr hdrs[MMSG_BATCH];
    struct iovec iovs[MMSG_BATCH];
    struct sockaddr_in names[MMSG_BATCH];
    union {
        char buf[CMSG_SPACE(sizeof(uint16_t))];
        struct cmsghdr align;
    } controls[MMSG_BATCH];
    int i = 0;
    while (i < o->nmsgs) {  /* the sends of one socket at a time, in order */
        int sock = o->msgs[i].sock, k = 0;
        while (i + k < o->nmsgs && k < MMSG_BATCH && o->msgs[i + k].sock == sock) {
            fp_msg *m = &o->msgs[i + k];
            iovs[k] = (struct iovec){o->buf + m->off, m->len};
            names[k] = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons(m->port),
                                            .sin_addr.s_addr = htonl(m->ip)};
            hdrs[k].msg_hdr = (struct msghdr){.msg_name = &names[k],
                                              .msg_namelen = sizeof names[k],
                                              .msg_iov = &iovs[k], .msg_iovlen = 1};
            if (m->count > 1) {
                hdrs[k].msg_hdr.msg_control = controls[k].buf;
                hdrs[k].msg_hdr.msg_controllen = sizeof controls[k].buf;
                struct cmsghdr *cm = CMSG_FIRSTHDR(&hdrs[k].msg_hdr);
                cm->cmsg_level = SOL_UDP;
                cm->cmsg_type = FP_UDP_SEGMENT;
                cm->cmsg_len = CMSG_LEN(sizeof(uint16_t));
                uint16_t seg = (uint16_t)m->seg;
                memcpy(CMSG_DATA(cm), &seg, sizeof seg);
            }
            k++;
        }
        int done = 0;
        while (done < k) {
            int r = sendmmsg(u->fds[sock], hdrs + done, (unsigned)(k - done), 0);
            if (r < 0) {
                if (errno == EINTR)
                    continue;
                send_failed(u, o, &o->msgs[i + done], errno, c);
                done++;
                continue;
            }
            for (int j = 0; j < r; j++)
                fp_count_sent(c, &o->msgs[i + done + j]);
            done += r;
        }
        i += k;
    }
    o->used = 0;
    o->nmsgs = 0;
}

int fp_udp_recv(int fd, uint8_t *buf, size_t room, int gro, fp_datagram *d)
{
    struct sockaddr_in from;
    struct iovec iov = {buf, room};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {.msg_name = &from, .msg_namelen = sizeof from, .msg_iov = &iov,
                         .msg_iovlen = 1, .msg_control = gro ? control.buf : NULL,
                         .msg_controllen = gro ? sizeof control.buf : 0};
    ssize_t r;
    do {
        r = recvmsg(fd, &msg, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0)
        return errno;
    d->n = (uint32_t)r;
    d->segment = d->n;
    d->src = ntohl(from.sin_addr.s_addr);
    if (gro) {
        for (struct cmsghdr *cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
            if (cm->cmsg_level == SOL_UDP && cm->cmsg_type == FP_UDP_GRO) {
                int value;
                memcpy(&value, CMSG_DATA(cm), sizeof value);
                d->segment = (uint32_t)value;
            }
        }
    }
    return 0;
}
