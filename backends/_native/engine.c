/* The engine: what happens to each TUN read and each received group of datagrams (the
 * processing core, pure: its effects go through the fp_path callbacks), and the I/O thread
 * that feeds it (the shell). It only moves packets between the TUN side (tun.c) and
 * the UDP side (udp.c) and applies the codec's verdicts (codec.c). Mirrors
 * backends/_datapath.py's PacketEngine: the same verdicts, counters and wire bytes; the
 * batching of sends is its own (sendmmsg). */
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include "engine.h"

#define MAX_JOIN 256

static const uint8_t PLAIN_HDR[FP_VNET_HDR_LEN];  /* "an ordinary packet; check it yourself" */

/* room for `bytes` and `msgs` more in the outbox, flushing it first if need be */
static inline void make_room(fp_path *p, size_t bytes, uint32_t msgs)
{
    if (p->out->used + bytes > FP_OUTBOX_BYTES || p->out->nmsgs + msgs > FP_OUTBOX_MSGS)
        p->flush(p);
}

static inline void maybe_flush(fp_path *p)
{
    if (p->out->used >= FP_FLUSH_BYTES)
        p->flush(p);
}

/* a TCP super-packet from the TUN: decided on its headers as its first segment, then cut */
static void tso(fp_path *p, const uint8_t *meta, uint8_t *buf, uint32_t n, uint32_t gso_size)
{
    fp_codec *c = p->codec;
    uint32_t h = (uint32_t)c->headroom;
    uint8_t *packet = buf + h;
    uint32_t hl = fp_tso_header_len(packet, n, gso_size);
    if (!hl) {
        p->counters->drops[FP_MALFORMED]++;
        return;
    }
    uint32_t segments = (n - hl + gso_size - 1) / gso_size;
    size_t stride = (size_t)h + hl + gso_size;
    size_t bytes = (segments - 1) * stride + h + n - (segments - 1) * gso_size;
    if (segments > FP_MAX_CUT || bytes > FP_OUTBOX_BYTES) {
        p->slow(p, FP_SLOW_TUN, meta, packet, n, 0);  /* an odd one: untouched, to Python */
        return;
    }
    fp_verdict v;
    pthread_mutex_lock(&c->lock);
    fp_from_tun(c, buf, n < hl + gso_size ? n : hl + gso_size, &v);
    pthread_mutex_unlock(&c->lock);
    if (v.action == FP_SLOW) {
        p->slow(p, FP_SLOW_TUN, meta, packet, n, 0);
        return;
    }
    if (v.action != FP_SEND) {
        p->counters->drops[v.reason] += segments;
        return;
    }
    make_room(p, bytes, segments);
    fp_outbox *o = p->out;
    uint32_t count = 0;
    size_t used = fp_cut(buf, h, n, hl, gso_size, o->buf + o->used, FP_OUTBOX_BYTES - o->used,
                         &count);
    p->counters->tso_packets++;
    p->counters->tso_segments += count;
    p->counters->tso_cuts++;
    fp_outbox_add(o, p->gso, (int)(v.flow % (uint32_t)p->nsenders), &v.route, o->used, used,
                  (uint32_t)stride);
    o->used += used;
    maybe_flush(p);
}

void fp_tun_packet(fp_path *p, const uint8_t *meta, uint8_t *buf, int64_t signed_n)
{
    fp_codec *c = p->codec;
    uint32_t h = (uint32_t)c->headroom;
    uint8_t *packet = buf + h;
    uint32_t n = signed_n < 0 ? 0 : (uint32_t)signed_n;
    fp_vnet vnet;
    if (p->vnet_hdr && fp_vnet_parse(meta, &vnet)) {
        if ((vnet.gso_type & ~FP_GSO_ECN) == FP_GSO_TCPV4)
            return tso(p, meta, buf, n, vnet.gso_size);
        if (vnet.gso_type != FP_GSO_NONE) {  /* never offered to the kernel (UDP, IPv6) */
            p->counters->drops[FP_MALFORMED]++;
            return;
        }
        if (vnet.flags & FP_NEEDS_CSUM) {
            if (!fp_finish_checksum(packet, n, vnet.csum_start, vnet.csum_offset)) {
                p->counters->drops[FP_MALFORMED]++;
                return;
            }
            p->counters->checksums_finished++;
        }
    }
    fp_verdict v;
    pthread_mutex_lock(&c->lock);
    fp_from_tun(c, buf, n, &v);
    pthread_mutex_unlock(&c->lock);
    if (v.action == FP_SLOW) {
        p->slow(p, FP_SLOW_TUN, meta, packet, n, 0);
        return;
    }
    if (v.action != FP_SEND) {
        p->counters->drops[v.reason]++;
        return;
    }
    make_room(p, h + n, 1);
    fp_outbox *o = p->out;
    memcpy(o->buf + o->used, buf, h + n);
    fp_outbox_add(o, p->gso, (int)(v.flow % (uint32_t)p->nsenders), &v.route, o->used, h + n,
                  h + n);
    o->used += h + n;
    maybe_flush(p);
}

static inline void count_tun_write(fp_path *p, int error, uint64_t weight)
{
    p->counters->drops[error == EAGAIN || error == EWOULDBLOCK ? FP_TUN_QUEUE_FULL
                                                                : FP_TUN_WRITE_ERROR] += weight;
}

void fp_net_rows(fp_path *p, uint8_t *buf, uint32_t n, uint32_t segment, uint32_t first,
                 uint32_t last, uint32_t src)
{
    fp_codec *c = p->codec;
    uint32_t h = (uint32_t)c->headroom;
    uint64_t end = (uint64_t)last * segment < n ? (uint64_t)last * segment : n;
    for (uint64_t start = (uint64_t)first * segment; start < end; start += segment) {
        uint32_t length = n - start < segment ? (uint32_t)(n - start) : segment;
        uint8_t *row = buf + start;
        fp_verdict v;
        pthread_mutex_lock(&c->lock);
        fp_from_net(c, row, length, src, &v, p->counters);
        pthread_mutex_unlock(&c->lock);
        if (v.action == FP_WRITE) {
            struct iovec iov[2] = {{(void *)PLAIN_HDR, FP_VNET_HDR_LEN}, {row + h, v.length}};
            int error = p->vnet_hdr ? p->tun_write(p, iov, 2) : p->tun_write(p, iov + 1, 1);
            if (error) {
                count_tun_write(p, error, 1);
            } else {
                p->counters->rx_packets++;
                p->counters->rx_bytes += v.length;
            }
        } else if (v.action == FP_SLOW) {
            p->slow(p, FP_SLOW_NET, NULL, row, length, src);
        } else {
            p->counters->drops[v.reason]++;
        }
    }
}

/* a run of segments that continue one TCP stream, into the TUN as one super-packet; the
 * codec decides on the first (peer, VNI, destination, TTL) for all of them */
static void join(fp_path *p, uint8_t *buf, uint32_t n, uint32_t segment, fp_run run,
                 uint32_t src)
{
    fp_codec *c = p->codec;
    fp_verdict v;
    pthread_mutex_lock(&c->lock);
    fp_from_net(c, buf + (size_t)run.first * segment, segment, src, &v, p->counters);
    pthread_mutex_unlock(&c->lock);
    if (v.action == FP_SLOW) {  /* each on its own to Python, which drops each the same */
        fp_net_rows(p, buf, n, segment, run.first, run.first + run.count, src);
        return;
    }
    if (v.action != FP_WRITE) {
        p->counters->drops[v.reason ? v.reason : FP_MALFORMED] += run.count;
        return;
    }
    uint8_t header[FP_VNET_HDR_LEN + 60 + 20];
    struct iovec iov[1 + MAX_JOIN];
    uint32_t total;
    int iovcnt = fp_join(buf, n, segment, (uint32_t)c->headroom, run, header, iov, &total);
    int error = p->tun_write(p, iov, iovcnt);
    if (error) {
        count_tun_write(p, error, run.count);
        return;
    }
    uint32_t hl = (uint32_t)iov[0].iov_len - FP_VNET_HDR_LEN;
    p->counters->joined_packets++;
    p->counters->joined_segments += run.count;
    p->counters->rx_packets += run.count;
    p->counters->rx_bytes += total + (uint64_t)(run.count - 1) * hl;  /* as if unjoined */
}

void fp_deliver(fp_path *p, uint8_t *buf, uint32_t n, uint32_t segment, uint32_t src)
{
    uint32_t rows = (n + segment - 1) / segment;
    if (!p->vnet_hdr || rows < FP_MIN_JOIN || segment < FP_SMALL) {
        fp_net_rows(p, buf, n, segment, 0, rows, src);
        return;
    }
    memset(buf + n, 0, (size_t)rows * segment - n);
    fp_run runs[FP_MAX_RUNS];
    int count = fp_plan_runs(buf, n, segment, (uint32_t)p->codec->headroom, runs, FP_MAX_RUNS);
    uint32_t done = 0;
    for (int i = 0; i < count; i++) {
        if (runs[i].count > MAX_JOIN) {  /* never: a run is at most 64 KB of 410+ byte rows */
            continue;
        }
        if (runs[i].first > done)
            fp_net_rows(p, buf, n, segment, done, runs[i].first, src);
        join(p, buf, n, segment, runs[i], src);
        done = runs[i].first + runs[i].count;
    }
    if (done < rows)
        fp_net_rows(p, buf, n, segment, done, rows, src);
}

/* ---- the shell: one I/O thread for both directions --------------------------------- */

struct fp_engine {
    fp_codec *codec;
    int tun_fd, listen_fd;
    fp_udp udp;
    int vnet_hdr, gro;
    int stop_fd, slow_fd;
    int running;
    pthread_t thread;
    fp_counters tx, rx;
    fp_path tx_path, rx_path;
    fp_outbox out;
    uint8_t *tun_buf, *net_buf;
    pthread_mutex_t slow_lock;
    fp_slow *slow_head, *slow_tail;
    uint32_t slow_count;
    size_t slow_bytes;
};

static void engine_slow(fp_path *p, int kind, const uint8_t *meta, const uint8_t *data,
                        uint32_t len, uint32_t src)
{
    fp_engine *e = p->sink;
    pthread_mutex_lock(&e->slow_lock);
    if (e->slow_count >= FP_SLOW_MAX || e->slow_bytes + len > FP_SLOW_MAX_BYTES) {
        pthread_mutex_unlock(&e->slow_lock);
        p->counters->drops[FP_SLOW_QUEUE_FULL]++;
        return;
    }
    fp_slow *item = malloc(sizeof *item + len);
    if (!item) {
        pthread_mutex_unlock(&e->slow_lock);
        p->counters->drops[FP_SLOW_QUEUE_FULL]++;
        return;
    }
    item->next = NULL;
    item->kind = kind;
    item->src = src;
    item->len = len;
    if (meta)
        memcpy(item->meta, meta, FP_VNET_HDR_LEN);
    else
        memset(item->meta, 0, FP_VNET_HDR_LEN);
    memcpy(item->data, data, len);
    if (e->slow_tail)
        e->slow_tail->next = item;
    else
        e->slow_head = item;
    e->slow_tail = item;
    e->slow_count++;
    e->slow_bytes += len;
    pthread_mutex_unlock(&e->slow_lock);
    p->counters->slow_packets++;
    uint64_t one = 1;
    if (write(e->slow_fd, &one, sizeof one) < 0) {
        /* the counter is saturated: Python has plenty to read already */
    }
}

static int engine_tun_write(fp_path *p, const struct iovec *iov, int iovcnt)
{
    return fp_tun_write(((fp_engine *)p->sink)->tun_fd, iov, iovcnt);
}

static void engine_flush(fp_path *p)
{
    fp_engine *e = p->sink;
    fp_udp_flush(&e->udp, p->out, p->counters);
    if (!e->udp.gso && p->gso) {
        p->gso = 0;
        uint64_t one = 1;  /* Python says it, once */
        if (write(e->slow_fd, &one, sizeof one) < 0) {
            /* saturated: Python looks soon anyway */
        }
    }
}

/* up to FP_BURST reads from the TUN: how many, or -1 after a read error. What they leave
 * in the outbox waits for the next burst while more is to read (small datagrams gather into
 * GSO sends across bursts); it is sent when the TUN is empty. */
static int tx_burst(fp_engine *e)
{
    uint8_t meta[FP_VNET_HDR_LEN];
    uint8_t *buf = e->tun_buf;
    uint32_t h = (uint32_t)e->codec->headroom;
    struct iovec iov[2] = {{meta, FP_VNET_HDR_LEN}, {buf + h, FP_TUN_BUFFER - h}};
    int reads = 0, empty = 0;
    while (reads < FP_BURST) {
        ssize_t r = e->vnet_hdr ? readv(e->tun_fd, iov, 2) : readv(e->tun_fd, iov + 1, 1);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            empty = 1;
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                e->tx.drops[FP_MALFORMED]++;
                reads = -1;
            }
            break;
        }
        reads++;
        fp_tun_packet(&e->tx_path, meta, buf, r - (e->vnet_hdr ? FP_VNET_HDR_LEN : 0));
    }
    if (empty && e->out.nmsgs)
        engine_flush(&e->tx_path);
    return reads;
}

/* up to FP_BURST receives: how many, or -1 after a receive error. GRO batches of whole
 * segments from one sender gather (up to FP_NET_GROUP bytes) so that one joining pass
 * covers several. */
static int rx_burst(fp_engine *e)
{
    uint8_t *buf = e->net_buf;
    fp_path *path = &e->rx_path;
    int join = e->vnet_hdr, result = 0, failed = 0;
    uint32_t used = 0, group_segment = 0, group_src = 0;
    for (int burst = 0; burst < FP_BURST; burst++) {
        fp_datagram d;
        /* 64 KB stay free behind the group: a whole last segment's zero padding */
        int error = fp_udp_recv(e->listen_fd, buf + used, FP_NET_BUFFER - 65536 - used,
                                e->gro, &d);
        if (error) {
            if (error != EAGAIN && error != EWOULDBLOCK) {
                e->rx.drops[FP_MALFORMED]++;
                failed = 1;
            }
            break;
        }
        result++;
        uint32_t n = d.n, segment = d.segment, src = d.src;
        if (!segment) {  /* an empty datagram */
            e->rx.drops[FP_MALFORMED]++;
            continue;
        }
        uint32_t rows = (n + segment - 1) / segment;
        if (n > segment) {
            e->rx.gro_batches++;
            e->rx.gro_segments += rows;
        }
        if (used && (segment != group_segment || src != group_src)) {
            /* the group pending holds whole segments only, so delivering it pads nothing
             * over what was just received after it */
            fp_deliver(path, buf, used, group_segment, group_src);
            memmove(buf, buf + used, n);
            used = 0;
        }
        if (!join) {
            fp_net_rows(path, buf, n, segment, 0, rows, src);
            continue;
        }
        used += n;
        group_segment = segment;
        group_src = src;
        if (n % segment || used > FP_NET_GROUP || segment < FP_SMALL) {
            fp_deliver(path, buf, used, segment, src);
            used = 0;
        }
    }
    if (used)
        fp_deliver(path, buf, used, group_segment, group_src);
    return failed ? -1 : result;
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Both directions until neither has anything: a burst of each in turn, so that a bulk
 * stream one way never holds back the ACKs the other way, and so that what the kernel
 * answers at once into the TUN (an echo reply, TCP's ACKs: the container's stack runs in
 * the same softirq as our write) is read and sent right after the write. How many reads
 * and receives moved something, or -1 after a read error. */
static int work(fp_engine *e)
{
    int moved = 0;
    for (;;) {
        int tx = tx_burst(e), rx = rx_burst(e);
        if (tx < 0 || rx < 0) {
            if (e->out.nmsgs)
                engine_flush(&e->tx_path);
            return -1;
        }
        if (!tx && !rx)
            return moved;
        moved += tx + rx;
    }
}

/* After a light round of work (a ping, a request and its answer: at most SPIN_AFTER reads
 * and receives) the thread watches both fds for a while (SPIN_NS) before it sleeps: the
 * answer to what it just sent mostly comes back within that time, and a sleeping thread
 * woken for it costs tens of microseconds of scheduler latency on every hop. Under load
 * (a flood, a bulk stream) the next packet is there anyway and spinning would only take
 * CPU from the rest of the host. It yields the CPU between looks, and it spins at most a
 * tenth of its time: idle spinning is paid from a budget that fills at a tenth of wall
 * time. */
#define SPIN_AFTER 4
#define SPIN_NS 500000
#define SPIN_SHARE 10
#define SPIN_BUDGET_CAP (10 * SPIN_NS)

typedef struct {
    uint64_t budget, last;
} spin_state;

/* 1 if the stop fd fired, -1 after a read error */
static int spin(fp_engine *e, spin_state *state, struct pollfd fds[3])
{
    uint64_t now = now_ns();
    state->budget += (now - state->last) / SPIN_SHARE;
    if (state->budget > SPIN_BUDGET_CAP)
        state->budget = SPIN_BUDGET_CAP;
    uint64_t idle_since = now;
    int result = 0;
    while (state->budget >= SPIN_NS / 4) {
        if (poll(fds, 3, 0) > 0) {
            if (fds[2].revents) {
                result = 1;
                break;
            }
            int moved = work(e);
            if (moved < 0) {
                result = -1;
                break;
            }
            if (moved > SPIN_AFTER)  /* load: stop spinning */
                break;
            if (moved) {
                idle_since = now_ns();
                continue;
            }
        }
        if (now_ns() - idle_since >= SPIN_NS)
            break;
        sched_yield();
    }
    now = now_ns();
    uint64_t idle = now - idle_since;
    state->budget = state->budget > idle ? state->budget - idle : 0;
    state->last = now;
    return result;
}

/* the I/O thread: one for both directions, as flannel's C proxy has (a second one, woken
 * for every packet the first already handles, only costs scheduler latency and CPU) */
static void *io_main(void *arg)
{
    fp_engine *e = arg;
    struct pollfd fds[3] = {{.fd = e->tun_fd, .events = POLLIN},
                            {.fd = e->listen_fd, .events = POLLIN},
                            {.fd = e->stop_fd, .events = POLLIN}};
    spin_state state = {SPIN_BUDGET_CAP, now_ns()};
    for (;;) {
        int result = work(e);
        if (result > 0)
            result = result <= SPIN_AFTER ? spin(e, &state, fds) : 0;
        if (result > 0)
            return NULL;
        if (result < 0 && poll(fds + 2, 1, 10) > 0) {
            /* a read error (the device or socket is going away): the daemon's device watch
             * ends it; meanwhile do not spin */
            return NULL;
        }
        if (poll(fds, 3, -1) < 0 && errno != EINTR)
            return NULL;
        if (fds[2].revents)
            return NULL;
    }
}

fp_engine *fp_engine_new(fp_codec *codec, int tun_fd, int listen_fd, const int *senders,
                         int nsenders, int vnet_hdr, int gso, int gro)
{
    if (nsenders < 1 || nsenders > FP_MAX_SENDERS)
        return NULL;
    fp_engine *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->codec = codec;
    e->tun_fd = tun_fd;
    e->listen_fd = listen_fd;
    memcpy(e->udp.fds, senders, sizeof(int) * (size_t)nsenders);
    e->udp.nfds = nsenders;
    e->udp.gso = gso;
    e->vnet_hdr = vnet_hdr;
    e->gro = gro;
    e->stop_fd = eventfd(0, EFD_CLOEXEC);
    e->slow_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    e->tun_buf = malloc(FP_TUN_BUFFER);
    e->net_buf = malloc(FP_NET_BUFFER);
    if (e->stop_fd < 0 || e->slow_fd < 0 || !e->tun_buf || !e->net_buf
        || fp_outbox_init(&e->out) || pthread_mutex_init(&e->slow_lock, NULL)) {
        fp_engine_free(e);
        return NULL;
    }
    e->tx_path = (fp_path){codec, &e->tx, vnet_hdr, gso, nsenders, &e->out, engine_tun_write,
                           engine_flush, engine_slow, e};
    e->rx_path = (fp_path){codec, &e->rx, vnet_hdr, gso, nsenders, NULL, engine_tun_write,
                           NULL, engine_slow, e};
    return e;
}

int fp_engine_start(fp_engine *e)
{
    if (e->running)
        return 0;
    int error = pthread_create(&e->thread, NULL, io_main, e);
    if (!error)
        e->running = 1;
    return error;
}

void fp_engine_stop(fp_engine *e)
{
    if (!e->running)
        return;
    uint64_t one = 1;
    if (write(e->stop_fd, &one, sizeof one) < 0) {
        /* eventfd writes of 1 do not fail */
    }
    pthread_join(e->thread, NULL);
    e->running = 0;
    uint64_t value;
    if (read(e->stop_fd, &value, sizeof value) < 0) {
        /* nothing to reset */
    }
}

void fp_engine_free(fp_engine *e)
{
    if (!e)
        return;
    fp_engine_stop(e);
    fp_slow *item = e->slow_head;
    while (item) {
        fp_slow *next = item->next;
        free(item);
        item = next;
    }
    if (e->stop_fd >= 0)
        close(e->stop_fd);
    if (e->slow_fd >= 0)
        close(e->slow_fd);
    free(e->tun_buf);
    free(e->net_buf);
    fp_outbox_free(&e->out);
    pthread_mutex_destroy(&e->slow_lock);
    free(e);
}

int fp_engine_slow_fd(const fp_engine *e) { return e->slow_fd; }

fp_slow *fp_engine_take_slow(fp_engine *e)
{
    uint64_t value;
    if (read(e->slow_fd, &value, sizeof value) < 0) {
        /* EAGAIN: nothing was signalled, the queue may still hold something */
    }
    pthread_mutex_lock(&e->slow_lock);
    fp_slow *head = e->slow_head;
    e->slow_head = e->slow_tail = NULL;
    e->slow_count = 0;
    e->slow_bytes = 0;
    pthread_mutex_unlock(&e->slow_lock);
    return head;
}

int fp_engine_take_events(fp_engine *e)
{
    return __atomic_exchange_n(&e->udp.refused, 0, __ATOMIC_RELAXED);
}

int fp_engine_gso(const fp_engine *e) { return e->tx_path.gso; }

void fp_engine_counters(const fp_engine *e, fp_counters *sum)
{
    const uint64_t *a = (const uint64_t *)&e->tx, *b = (const uint64_t *)&e->rx;
    uint64_t *out = (uint64_t *)sum;
    for (size_t i = 0; i < sizeof *sum / sizeof(uint64_t); i++)
        out[i] = __atomic_load_n(&a[i], __ATOMIC_RELAXED) + __atomic_load_n(&b[i], __ATOMIC_RELAXED);
}
