/* The processing core shared by the I/O thread and the test entry points (module.c), and
 * the engine that runs the thread. See fastpath.h for the layout of the sources. */
#ifndef FLANNELD_ENGINE_H
#define FLANNELD_ENGINE_H

#include "fastpath.h"

#define FP_BURST 16                 /* reads of one fd before the other's turn */
#define FP_TUN_BUFFER (65536 + 4096)
#define FP_NET_GROUP (8 * 65536)    /* received batches gathered for one joining pass */
#define FP_NET_BUFFER (FP_NET_GROUP + 2 * 65536)
#define FP_FLUSH_BYTES 65536        /* the outbox leaves once it holds this much */
#define FP_MAX_RUNS 1024
#define FP_SLOW_MAX 1024            /* packets waiting for the Python codec */
#define FP_SLOW_MAX_BYTES (16 << 20)

enum fp_slow_kind { FP_SLOW_TUN = 0, FP_SLOW_NET = 1 };

typedef struct fp_path fp_path;
struct fp_path {
    fp_codec *codec;
    fp_counters *counters;
    int vnet_hdr;                   /* the TUN carries virtio-net headers (offloads) */
    int gso;                        /* datagrams of one destination leave in GSO sends */
    int nsenders;
    fp_outbox *out;
    /* where packets go: the TUN (0 or an errno), the Python codec */
    int (*tun_write)(fp_path *path, const struct iovec *iov, int iovcnt);
    void (*flush)(fp_path *path);   /* send what the outbox holds and empty it */
    void (*slow)(fp_path *path, int kind, const uint8_t *meta, const uint8_t *data,
                 uint32_t len, uint32_t src);
    void *sink;
};

/* one read from the TUN: meta (the virtio-net header, when path->vnet_hdr), the packet at
 * buf + headroom, n bytes; what leaves is queued in path->out (and flushed through
 * path->flush when it is full enough) */
void fp_tun_packet(fp_path *path, const uint8_t *meta, uint8_t *buf, int64_t n);
/* a group of received datagrams (buf[0:n], `segment` bytes each but the last, from src),
 * into the TUN: runs that continue a TCP stream joined, the rest one by one. buf must have
 * room for zero padding to a whole last segment. */
void fp_deliver(fp_path *path, uint8_t *buf, uint32_t n, uint32_t segment, uint32_t src);
void fp_net_rows(fp_path *path, uint8_t *buf, uint32_t n, uint32_t segment, uint32_t first,
                 uint32_t last, uint32_t src);

typedef struct fp_slow {
    struct fp_slow *next;
    int kind;
    uint32_t src;
    uint32_t len;
    uint8_t meta[FP_VNET_HDR_LEN];
    uint8_t data[];
} fp_slow;

typedef struct fp_engine fp_engine;
fp_engine *fp_engine_new(fp_codec *codec, int tun_fd, int listen_fd, const int *senders,
                         int nsenders, int vnet_hdr, int gso, int gro);
void fp_engine_free(fp_engine *e);
int fp_engine_start(fp_engine *e);     /* 0 or an errno */
void fp_engine_stop(fp_engine *e);     /* waits for the thread */
int fp_engine_slow_fd(const fp_engine *e);
fp_slow *fp_engine_take_slow(fp_engine *e);  /* the queue, oldest first; free each */
int fp_engine_take_events(fp_engine *e);     /* bit 0: the kernel refused UDP GSO */
void fp_engine_counters(const fp_engine *e, fp_counters *sum);
int fp_engine_gso(const fp_engine *e);

#endif
