/*
 * loadgen: an epoll load generator for chat fan-out benchmarks.
 *
 * N clients connect to a line-protocol server (newline-delimited text over TCP), a
 * websocket server (text frames, optionally the chatserv.v1.json subprotocol) or an IRC
 * server. Each client may send a nickname (and a /join) first; an IRC client always
 * registers (NICK, USER) and joins its channel. Once every client is ready, S of them
 * send messages at a fixed rate; each message text carries a marker
 *
 *     ~SENDER,SEQ,SEND_NS~ followed by padding
 *
 * where SEND_NS is CLOCK_MONOTONIC in nanoseconds. Every client looks for markers in
 * what it receives and counts deliveries, duplicates and losses per (sender, seq); the
 * end-to-end latency of each delivery is recorded. At the end one JSON object with the
 * results (and this program's own CPU time) is printed on standard output.
 *
 * Client i is in room (i % rooms); senders are clients 0..S-1, so they spread evenly
 * over the rooms. A receiver expects every message of every sender in its room except
 * its own (unless --echo).
 *
 * --proto irc: client i is b<i> (NICK b<i>, USER b<i> 0 * :b<i>) and, once the welcome
 * (001) arrives, joins #lobby, or #r<room> with --join (as a line client's "/join r<room>";
 * some servers refuse a JOIN sent before registration is complete). It is ready when the 366
 * (end of NAMES) for that channel arrives (--ready-match and --ready-count are not used).
 * It sends PRIVMSG #channel :MARKER..., answers PING, and counts only PRIVMSG lines: one
 * whose channel is not its own or whose source nick is not the marker's sender is
 * misrouted.
 *
 * --hold: connect, wait until ready, print {"phase":"ready",...}, then hold the
 * connections until standard input is closed (for memory measurements and connect storms).
 * --max-pending N: how many TCP connects may be in progress at once (default 256).
 * --max-unready N: how many clients may be connecting or logging in at once (default: no
 * limit): with N under the server's listen backlog, its accept queue cannot overflow.
 *
 * Without --hold, {"phase":"measuring"} is printed (and flushed) when sending starts, so
 * that a profiler can be attached for the measured window. --server-pid PID: the server's
 * CPU time (user + system, from /proc/PID/stat) over the measured window (from the first
 * message sent until everything is delivered or the drain time is over) is reported as
 * server_cpu_s, with the window's length as window_s.
 *
 * Build: gcc -O2 -o loadgen loadgen.c
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum { P_LINE, P_WS, P_WSJSON, P_IRC };
enum { S_CONNECTING, S_HANDSHAKE, S_OPEN, S_CLOSED };

typedef struct {
    int fd, id, state, room, ready, readySeen;
    char *in;
    size_t inLen, inCap;
    char *out;
    size_t outLen, outOff, outCap;
    int wantOut;
    int32_t *last; /* per sender: last sequence number seen (0 = none) */
    uint64_t unique, dup, misrouted, self;
} Client;

static struct {
    const char *host;
    int port, port2, spread, proto, clients, senders, rooms, size, echo, hold, sendNick, join;
    double rate, duration, drain, settle, connectTimeout;
    const char *readyMatch;
    int readyCount, maxPending, maxUnready, serverPid;
} opt = {"127.0.0.1", 10001, 0, 0, P_LINE, 100, 0, 1, 64, 0, 0, 0, 0,
         5.0, 5.0, 3.0, 0.5, 60.0, NULL, 1, 256, 0, 0};

static Client *cl;
static int ep;
static uint64_t *sentBy;     /* messages sent by each sender */
static uint32_t *lat;        /* latencies in microseconds */
static size_t latLen, latCap;
static uint64_t otherFrames, closedCount, connectErrors, writeErrors, lateSends, bytesIn;
static int measuring;

static uint64_t nowNs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + ts.tv_nsec;
}

static void die(const char *what) {
    perror(what);
    exit(2);
}

static void *xrealloc(void *p, size_t n) {
    p = realloc(p, n);
    if (!p && n) die("realloc");
    return p;
}

static void setEvents(Client *c) {
    struct epoll_event e = {.events = EPOLLIN | (c->wantOut ? EPOLLOUT : 0), .data.u32 = c->id};
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0) die("epoll_ctl mod");
}

static int settled; /* clients that are ready, or were closed before they were */

static void setReady(Client *c) {
    if (!c->ready) settled++;
    c->ready = 1;
}

static void closeClient(Client *c) {
    if (c->state == S_CLOSED) return;
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    c->state = S_CLOSED;
    closedCount++;
    if (!c->ready) settled++;
}

static void flushOut(Client *c) {
    while (c->outOff < c->outLen) {
        ssize_t n = write(c->fd, c->out + c->outOff, c->outLen - c->outOff);
        if (n < 0) {
            if (errno == EAGAIN) break;
            if (errno == EINTR) continue;
            writeErrors++;
            closeClient(c);
            return;
        }
        c->outOff += n;
    }
    if (c->outOff == c->outLen) c->outOff = c->outLen = 0;
    int want = c->outLen > 0;
    if (want != c->wantOut) {
        c->wantOut = want;
        setEvents(c);
    }
}

static void queueRaw(Client *c, const char *data, size_t n) {
    if (c->outLen + n > c->outCap) {
        if (c->outOff) {
            memmove(c->out, c->out + c->outOff, c->outLen - c->outOff);
            c->outLen -= c->outOff;
            c->outOff = 0;
        }
        if (c->outLen + n > c->outCap) {
            c->outCap = (c->outLen + n) * 2 + 256;
            c->out = xrealloc(c->out, c->outCap);
        }
    }
    memcpy(c->out + c->outLen, data, n);
    c->outLen += n;
}

/* Queue one text message (a line, or a masked websocket text frame). */
static void queueText(Client *c, const char *text, size_t n, int opcode) {
    if (opt.proto == P_LINE || opt.proto == P_IRC) {
        queueRaw(c, text, n);
        if (opt.proto == P_IRC)
            queueRaw(c, "\r\n", 2);
        else
            queueRaw(c, "\n", 1);
        return;
    }
    unsigned char h[14];
    size_t hl = 0;
    h[hl++] = 0x80 | opcode;
    if (n < 126) {
        h[hl++] = 0x80 | n;
    } else if (n < 65536) {
        h[hl++] = 0x80 | 126;
        h[hl++] = n >> 8;
        h[hl++] = n & 0xff;
    } else {
        h[hl++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--) h[hl++] = ((uint64_t)n >> (8 * i)) & 0xff;
    }
    static const unsigned char mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    memcpy(h + hl, mask, 4);
    hl += 4;
    queueRaw(c, (char *)h, hl);
    char buf[4096];
    size_t done = 0;
    while (done < n) {
        size_t k = n - done < sizeof buf ? n - done : sizeof buf;
        for (size_t i = 0; i < k; i++) buf[i] = text[done + i] ^ mask[(done + i) & 3];
        queueRaw(c, buf, k);
        done += k;
    }
}

/* One request in the client's dialect: JSON {"type":TYPE,KEY:VALUE} or a line. */
static void queueRequest(Client *c, const char *type, const char *key, const char *value,
                         const char *linePrefix) {
    char buf[8192];
    int n;
    if (opt.proto == P_WSJSON)
        n = snprintf(buf, sizeof buf, "{\"type\":\"%s\",\"%s\":\"%s\"}", type, key, value);
    else
        n = snprintf(buf, sizeof buf, "%s%s", linePrefix, value);
    queueText(c, buf, n, 1);
}

/* The IRC channel of a room: #lobby, or #r<room> with --join. */
static const char *channelOf(int room) {
    static char buf[32];
    if (!opt.join) return "#lobby";
    snprintf(buf, sizeof buf, "#r%d", room);
    return buf;
}

static void becomeOpen(Client *c) {
    c->state = S_OPEN;
    char name[64];
    if (opt.proto == P_IRC) {
        char buf[256];
        int n = snprintf(buf, sizeof buf, "NICK b%d\r\nUSER b%d 0 * :b%d\r\n", c->id, c->id,
                         c->id);
        queueRaw(c, buf, n);
        flushOut(c);
        return;
    }
    if (opt.sendNick) {
        snprintf(name, sizeof name, "b%d", c->id);
        queueRequest(c, "nick", "nick", name, "");
    }
    if (opt.join) {
        snprintf(name, sizeof name, "r%d", c->room);
        queueRequest(c, "join", "room", name, "/join ");
    }
    if (!opt.readyMatch) setReady(c);
    flushOut(c);
}

/* Count the delivery of the marker ~S,Q,T~ at m (end: the end of the text). For IRC,
 * `source` is the nick the message came from and `target` its channel (else NULL). */
static void onMarker(Client *c, const char *m, const char *end, const char *source,
                     size_t sourceLen, const char *target, size_t targetLen, uint64_t now) {
    char *q;
    m++;
    unsigned long s = strtoul(m, &q, 10);
    if (q >= end || *q != ',') return;
    unsigned long seq = strtoul(q + 1, &q, 10);
    if (q >= end || *q != ',') return;
    unsigned long long t = strtoull(q + 1, &q, 10);
    if (q >= end || *q != '~' || s >= (unsigned long)opt.senders) return;
    if ((int)s == c->id) {
        c->self++;
        if (!opt.echo) return;
    }
    if (cl[s].room != c->room) {
        c->misrouted++;
        return;
    }
    if (target) {
        char nick[32];
        int k = snprintf(nick, sizeof nick, "b%lu", s);
        const char *channel = channelOf(c->room);
        if (sourceLen != (size_t)k || memcmp(source, nick, k) != 0 ||
            targetLen != strlen(channel) || memcmp(target, channel, targetLen) != 0) {
            c->misrouted++;
            return;
        }
    }
    int32_t last = c->last[s];
    if ((int32_t)seq <= last) {
        c->dup++;
        return;
    }
    c->last[s] = seq;
    c->unique++;
    uint64_t us = now > t ? (now - t) / 1000 : 0;
    if (latLen == latCap) {
        latCap = latCap ? latCap * 2 : 1 << 20;
        lat = xrealloc(lat, latCap * sizeof *lat);
    }
    lat[latLen++] = us > 0xffffffffu ? 0xffffffffu : (uint32_t)us;
}

/* With --join, a ready match counts only when it names the client's own room: the room
 * list of #r<room> ("#r5 users (" on the line wire, "room":"r5" in JSON), not of a room
 * passed through on the way (a server may or may not put a first nickname in its default
 * room before the /join sent with it). */
static int inOwnRoom(const Client *c, const char *p, size_t n) {
    if (!opt.join || opt.proto == P_IRC) return 1;
    char needle[48];
    int k = opt.proto == P_WSJSON ? snprintf(needle, sizeof needle, "\"room\":\"r%d\"", c->room)
                                  : snprintf(needle, sizeof needle, "#r%d ", c->room);
    return memmem(p, n, needle, (size_t)k) != NULL;
}

static void onPayload(Client *c, const char *p, size_t n, uint64_t now) {
    const char *m = memchr(p, '~', n);
    if (!m || !measuring) {
        if (opt.readyMatch && !c->ready && memmem(p, n, opt.readyMatch, strlen(opt.readyMatch))
            && inOwnRoom(c, p, n))
            if (++c->readySeen >= opt.readyCount) setReady(c);
        if (!m) {
            otherFrames++;
            return;
        }
    }
    onMarker(c, m, p + n, NULL, 0, NULL, 0, now);
}

/* One IRC line (without its CRLF): [:source ]VERB params... */
static void onIrcLine(Client *c, const char *p, size_t n, uint64_t now) {
    const char *end = p + n, *source = NULL, *sp;
    size_t sourceLen = 0;
    if (n && *p == '@') { /* message tags (only if negotiated, which we do not) */
        if (!(sp = memchr(p, ' ', n))) return;
        p = sp + 1;
    }
    if (p < end && *p == ':') {
        if (!(sp = memchr(p, ' ', end - p))) return;
        source = p + 1;
        const char *bang = memchr(source, '!', sp - source);
        sourceLen = (bang ? bang : sp) - source;
        p = sp + 1;
    }
    sp = memchr(p, ' ', end - p);
    const char *verb = p, *params = sp ? sp + 1 : end;
    size_t verbLen = (sp ? sp : end) - p;
    if (verbLen == 7 && !memcmp(verb, "PRIVMSG", 7)) {
        const char *target = params;
        if (!(sp = memchr(target, ' ', end - target))) return;
        size_t targetLen = sp - target;
        const char *text = sp + 1;
        if (text < end && *text == ':') text++;
        const char *m = memchr(text, '~', end - text);
        if (m) {
            onMarker(c, m, end, source, sourceLen, target, targetLen, now);
            return;
        }
    } else if (verbLen == 4 && !memcmp(verb, "PING", 4)) {
        char buf[600];
        int k = snprintf(buf, sizeof buf, "PONG %.*s", (int)(end - params), params);
        queueText(c, buf, k < (int)sizeof buf ? k : (int)sizeof buf - 1, 1);
    } else if (!c->ready && verbLen == 3 && !memcmp(verb, "001", 3)) {
        char buf[64];
        int k = snprintf(buf, sizeof buf, "JOIN %s", channelOf(c->room));
        queueText(c, buf, k, 1);
    } else if (!c->ready && verbLen == 3 && !memcmp(verb, "366", 3)) {
        /* 366 NICK #channel :End of /NAMES list */
        const char *channel = channelOf(c->room);
        size_t cn = strlen(channel);
        const char *chan = memchr(params, ' ', end - params);
        if (chan && (size_t)(end - chan) > cn + 1 && !memcmp(chan + 1, channel, cn) &&
            chan[cn + 1] == ' ')
            setReady(c);
    }
    otherFrames++;
}

/* Consume complete lines or frames from c->in; return bytes used. */
static size_t parse(Client *c, char *buf, size_t len, uint64_t now) {
    size_t pos = 0;
    if (c->state == S_HANDSHAKE) {
        char *e = memmem(buf, len, "\r\n\r\n", 4);
        if (!e) return 0;
        if (len < 12 || memcmp(buf + 9, "101", 3) != 0) {
            fprintf(stderr, "loadgen: client %d: handshake refused: %.*s\n", c->id,
                    (int)(len < 80 ? len : 80), buf);
            connectErrors++;
            closeClient(c);
            return len;
        }
        pos = e + 4 - buf;
        becomeOpen(c);
    }
    if (opt.proto == P_LINE || opt.proto == P_IRC) {
        while (pos < len) {
            char *nl = memchr(buf + pos, '\n', len - pos);
            if (!nl) break;
            if (opt.proto == P_IRC) {
                char *e = nl > buf + pos && nl[-1] == '\r' ? nl - 1 : nl;
                onIrcLine(c, buf + pos, e - (buf + pos), now);
            } else {
                onPayload(c, buf + pos, nl - (buf + pos), now);
            }
            pos = nl + 1 - buf;
        }
        if (opt.proto == P_IRC && c->outLen) flushOut(c); /* JOIN, PONGs */
        return pos;
    }
    while (len - pos >= 2) {
        unsigned char *h = (unsigned char *)buf + pos;
        int opcode = h[0] & 0x0f;
        uint64_t plen = h[1] & 0x7f;
        size_t hl = 2;
        if (plen == 126) {
            if (len - pos < 4) break;
            plen = (h[2] << 8) | h[3];
            hl = 4;
        } else if (plen == 127) {
            if (len - pos < 10) break;
            plen = 0;
            for (int i = 0; i < 8; i++) plen = (plen << 8) | h[2 + i];
            hl = 10;
        }
        if (h[1] & 0x80) hl += 4; /* servers don't mask, but be safe */
        if (len - pos < hl + plen) break;
        char *payload = buf + pos + hl;
        if (opcode == 1 || opcode == 0)
            onPayload(c, payload, plen, now);
        else if (opcode == 9)
            queueText(c, payload, plen, 0xA);
        else if (opcode == 8) {
            closeClient(c);
            return len;
        }
        pos += hl + plen;
    }
    if (c->outLen) flushOut(c);
    return pos;
}

static void onReadable(Client *c, uint64_t now) {
    static char rbuf[1 << 16];
    for (;;) {
        ssize_t n = read(c->fd, rbuf, sizeof rbuf);
        if (n == 0) {
            closeClient(c);
            return;
        }
        if (n < 0) {
            if (errno == EAGAIN) return;
            if (errno == EINTR) continue;
            closeClient(c);
            return;
        }
        bytesIn += n;
        if (c->inLen == 0) {
            size_t used = parse(c, rbuf, n, now);
            if (c->state == S_CLOSED) return;
            if (used < (size_t)n) {
                if (c->inCap < n - used) {
                    c->inCap = (n - used) * 2;
                    c->in = xrealloc(c->in, c->inCap);
                }
                memcpy(c->in, rbuf + used, n - used);
                c->inLen = n - used;
            }
        } else {
            if (c->inLen + n > c->inCap) {
                c->inCap = (c->inLen + n) * 2;
                c->in = xrealloc(c->in, c->inCap);
            }
            memcpy(c->in + c->inLen, rbuf, n);
            c->inLen += n;
            size_t used = parse(c, c->in, c->inLen, now);
            if (c->state == S_CLOSED) return;
            memmove(c->in, c->in + used, c->inLen - used);
            c->inLen -= used;
        }
        if ((size_t)n < sizeof rbuf) return;
    }
}

static struct sockaddr_in addr, addr2; /* --port2: where the receivers connect */
static int nextToConnect, pending;

static void startConnect(Client *c) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    if (fd < 0) die("socket");
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    c->fd = fd;
    c->state = S_CONNECTING;
    /* With --port2 the senders (the first --senders clients) use --port, the others it;
       with --spread too, every other member of each room (client i is in room i % rooms)
       uses it, whether it sends or not. */
    int second = opt.spread ? (c->id / opt.rooms) % 2 : c->id >= opt.senders;
    struct sockaddr_in *to = opt.port2 && second ? &addr2 : &addr;
    if (connect(fd, (struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS) {
        connectErrors++;
        close(fd);
        c->state = S_CLOSED;
        settled++;
        return;
    }
    struct epoll_event e = {.events = EPOLLIN | EPOLLOUT, .data.u32 = c->id};
    c->wantOut = 1;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0) die("epoll_ctl add");
    pending++;
}

static void onConnected(Client *c) {
    int err = 0;
    socklen_t l = sizeof err;
    getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &l);
    pending--;
    if (err) {
        connectErrors++;
        closeClient(c);
        return;
    }
    if (opt.proto == P_LINE || opt.proto == P_IRC) {
        becomeOpen(c);
    } else {
        char req[512];
        int n = snprintf(req, sizeof req,
                         "GET / HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                         "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                         "Sec-WebSocket-Version: 13\r\n%s\r\n",
                         opt.host, opt.port,
                         opt.proto == P_WSJSON ? "Sec-WebSocket-Protocol: chatserv.v1.json\r\n" : "");
        c->state = S_HANDSHAKE;
        queueRaw(c, req, n);
    }
    flushOut(c);
}

static int stdinClosed;

/* Run the event loop until `until` (ns) or until stop() says so. */
static void loop(uint64_t until, int (*stop)(void), void (*tick)(uint64_t)) {
    struct epoll_event evs[512];
    for (;;) {
        uint64_t now = nowNs();
        if (now >= until || (stop && stop())) return;
        while (nextToConnect < opt.clients && pending < opt.maxPending &&
               (!opt.maxUnready || nextToConnect - settled < opt.maxUnready))
            startConnect(&cl[nextToConnect++]);
        int timeout = tick ? 1 : (int)((until - now) / 1000000 + 1);
        if (timeout > 100) timeout = 100;
        int n = epoll_wait(ep, evs, 512, timeout);
        now = nowNs();
        for (int i = 0; i < n; i++) {
            uint32_t id = evs[i].data.u32;
            if (id == UINT32_MAX) {
                char b[256];
                if (read(0, b, sizeof b) <= 0) {
                    stdinClosed = 1;
                    epoll_ctl(ep, EPOLL_CTL_DEL, 0, NULL);
                }
                continue;
            }
            Client *c = &cl[id];
            if (c->state == S_CLOSED) continue;
            if (c->state == S_CONNECTING) {
                onConnected(c);
                continue;
            }
            if (evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) onReadable(c, now);
            if (c->state != S_CLOSED && (evs[i].events & EPOLLOUT)) flushOut(c);
        }
        if (tick) tick(now);
    }
}

static int allReady(void) {
    /* Neither being ready nor being closed is ever undone: resume where the last call stopped. */
    static int first;
    if (nextToConnect < opt.clients || pending) return 0;
    for (; first < opt.clients; first++)
        if (cl[first].state != S_CLOSED && !cl[first].ready) return 0;
    return 1;
}

static int isStdinClosed(void) { return stdinClosed; }

static uint64_t *nextSend, interval, sendEnd;
static char *padding;

static void sendTick(uint64_t now) {
    if (now >= sendEnd) return;
    char buf[8192];
    for (int s = 0; s < opt.senders; s++) {
        Client *c = &cl[s];
        if (c->state == S_CLOSED) continue;
        int queued = 0;
        while (nextSend[s] <= now) {
            if (now - nextSend[s] > 10000000ull) lateSends++;
            nextSend[s] += interval;
            uint64_t t = nowNs();
            int n = snprintf(buf, sizeof buf, "~%d,%llu,%llu~", s,
                             (unsigned long long)sentBy[s] + 1, (unsigned long long)t);
            if (n < opt.size) {
                memcpy(buf + n, padding, opt.size - n);
                n = opt.size;
            }
            if (opt.proto == P_WSJSON) {
                char j[8300];
                int k = snprintf(j, sizeof j, "{\"type\":\"say\",\"text\":\"%.*s\"}", n, buf);
                queueText(c, j, k, 1);
            } else if (opt.proto == P_IRC) {
                char j[8300];
                int k = snprintf(j, sizeof j, "PRIVMSG %s :%.*s", channelOf(c->room), n, buf);
                queueText(c, j, k, 1);
            } else {
                queueText(c, buf, n, 1);
            }
            sentBy[s]++;
            queued = 1;
        }
        if (queued) flushOut(c);
    }
}

static uint64_t expectedTotal(void) {
    uint64_t e = 0;
    for (int r = 0; r < opt.clients; r++) {
        if (cl[r].state == S_CLOSED) continue;
        for (int s = 0; s < opt.senders; s++)
            if (cl[s].room == cl[r].room && (s != r || opt.echo)) e += sentBy[s];
    }
    return e;
}

static uint64_t expectedCache;
static int allDelivered(void) {
    uint64_t got = 0;
    for (int r = 0; r < opt.clients; r++) got += cl[r].unique;
    return got >= expectedCache;
}

static int cmpU32(const void *a, const void *b) {
    uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
    return x < y ? -1 : x > y;
}

static double cpuSeconds(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Another process's CPU time (user + system, every thread) in seconds; -1 if unknown. */
static double processCpuSeconds(int pid) {
    char path[64], buf[2048];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')'); /* the command name may hold spaces */
    unsigned long long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / sysconf(_SC_CLK_TCK);
}

static int countState(int st) {
    int n = 0;
    for (int i = 0; i < opt.clients; i++) n += cl[i].state == st;
    return n;
}

static int countReady(void) {
    int n = 0;
    for (int i = 0; i < opt.clients; i++) n += cl[i].state != S_CLOSED && cl[i].ready;
    return n;
}

static void usage(void) {
    fprintf(stderr,
            "usage: loadgen [--host H] --port P [--port2 P2 [--spread]] [--proto line|ws|wsjson|irc]\n"
            "  [--clients N]\n"
            "  [--senders S] [--rate MSG_PER_S_PER_SENDER] [--duration S] [--drain S]\n"
            "  [--settle S] [--size BYTES] [--rooms R] [--nick] [--join] [--echo]\n"
            "  [--ready-match TEXT] [--ready-count K] [--connect-timeout S] [--hold]\n"
            "  [--max-pending N] [--max-unready N] [--server-pid PID]\n");
    exit(2);
}

int main(int argc, char **argv) {
    static struct option lo[] = {
        {"host", 1, 0, 'h'},      {"port", 1, 0, 'p'},        {"proto", 1, 0, 'P'},
        {"port2", 1, 0, '2'},     {"spread", 0, 0, 'W'},
        {"clients", 1, 0, 'n'},   {"senders", 1, 0, 's'},     {"rate", 1, 0, 'r'},
        {"duration", 1, 0, 'd'},  {"drain", 1, 0, 'D'},       {"settle", 1, 0, 'S'},
        {"size", 1, 0, 'z'},      {"rooms", 1, 0, 'R'},       {"nick", 0, 0, 'N'},
        {"join", 0, 0, 'J'},      {"echo", 0, 0, 'e'},        {"ready-match", 1, 0, 'm'},
        {"ready-count", 1, 0, 'k'}, {"connect-timeout", 1, 0, 'T'}, {"hold", 0, 0, 'H'},
        {"max-pending", 1, 0, 'M'}, {"max-unready", 1, 0, 'U'}, {"server-pid", 1, 0, 'C'},
        {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (ch) {
        case 'h': opt.host = optarg; break;
        case 'p': opt.port = atoi(optarg); break;
        case '2': opt.port2 = atoi(optarg); break;
        case 'W': opt.spread = 1; break;
        case 'P':
            if (!strcmp(optarg, "line")) opt.proto = P_LINE;
            else if (!strcmp(optarg, "ws")) opt.proto = P_WS;
            else if (!strcmp(optarg, "wsjson")) opt.proto = P_WSJSON;
            else if (!strcmp(optarg, "irc")) opt.proto = P_IRC;
            else usage();
            break;
        case 'n': opt.clients = atoi(optarg); break;
        case 's': opt.senders = atoi(optarg); break;
        case 'r': opt.rate = atof(optarg); break;
        case 'd': opt.duration = atof(optarg); break;
        case 'D': opt.drain = atof(optarg); break;
        case 'S': opt.settle = atof(optarg); break;
        case 'z': opt.size = atoi(optarg); break;
        case 'R': opt.rooms = atoi(optarg); break;
        case 'N': opt.sendNick = 1; break;
        case 'J': opt.join = 1; break;
        case 'e': opt.echo = 1; break;
        case 'm': opt.readyMatch = optarg; break;
        case 'k': opt.readyCount = atoi(optarg); break;
        case 'T': opt.connectTimeout = atof(optarg); break;
        case 'H': opt.hold = 1; break;
        case 'M': opt.maxPending = atoi(optarg); break;
        case 'U': opt.maxUnready = atoi(optarg); break;
        case 'C': opt.serverPid = atoi(optarg); break;
        default: usage();
        }
    }
    if (opt.senders > opt.clients || opt.rooms < 1 || opt.size > 4000 || opt.rate <= 0 ||
        opt.maxPending < 1)
        usage();
    if (opt.proto == P_IRC && opt.size > 400) usage(); /* an IRC line is at most 512 bytes */
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);

    addr.sin_family = AF_INET;
    addr.sin_port = htons(opt.port);
    if (inet_pton(AF_INET, opt.host, &addr.sin_addr) != 1) usage();
    addr2 = addr;
    addr2.sin_port = htons(opt.port2);
    ep = epoll_create1(0);
    cl = calloc(opt.clients, sizeof *cl);
    sentBy = calloc(opt.senders ? opt.senders : 1, sizeof *sentBy);
    nextSend = calloc(opt.senders ? opt.senders : 1, sizeof *nextSend);
    padding = malloc(opt.size + 1);
    memset(padding, 'x', opt.size);
    for (int i = 0; i < opt.clients; i++) {
        cl[i].id = i;
        cl[i].fd = -1;
        cl[i].state = S_CLOSED;
        cl[i].room = i % opt.rooms;
        cl[i].last = opt.senders ? calloc(opt.senders, sizeof(int32_t)) : NULL;
    }
    for (int i = 0; i < opt.clients; i++) cl[i].state = S_CONNECTING; /* not yet started */

    uint64_t t0 = nowNs();
    loop(t0 + (uint64_t)(opt.connectTimeout * 1e9), allReady, NULL);
    double connectSecs = (nowNs() - t0) / 1e9;
    int ready = countReady();
    loop(nowNs() + (uint64_t)(opt.settle * 1e9), NULL, NULL);

    if (opt.hold) {
        printf("{\"phase\":\"ready\",\"clients\":%d,\"open\":%d,\"ready\":%d,"
               "\"connect_errors\":%llu,\"connect_s\":%.3f,\"bytes_in\":%llu}\n",
               opt.clients, opt.clients - countState(S_CLOSED), ready,
               (unsigned long long)connectErrors, connectSecs, (unsigned long long)bytesIn);
        fflush(stdout);
        struct epoll_event e = {.events = EPOLLIN, .data.u32 = UINT32_MAX};
        epoll_ctl(ep, EPOLL_CTL_ADD, 0, &e);
        loop(UINT64_MAX, isStdinClosed, NULL);
        printf("{\"phase\":\"done\",\"open\":%d,\"closed_by_server\":%llu}\n",
               opt.clients - countState(S_CLOSED), (unsigned long long)closedCount);
        return 0;
    }

    uint64_t closedBefore = closedCount;
    printf("{\"phase\":\"measuring\"}\n");
    fflush(stdout);
    measuring = 1;
    double cpu0 = cpuSeconds();
    double serverCpu0 = opt.serverPid ? processCpuSeconds(opt.serverPid) : -1;
    uint64_t start = nowNs();
    interval = (uint64_t)(1e9 / opt.rate);
    for (int s = 0; s < opt.senders; s++)
        nextSend[s] = start + (uint64_t)((double)interval * s / opt.senders);
    sendEnd = start + (uint64_t)(opt.duration * 1e9);
    loop(sendEnd, NULL, sendTick);
    uint64_t sendStop = nowNs();
    expectedCache = expectedTotal();
    loop(sendStop + (uint64_t)(opt.drain * 1e9), allDelivered, NULL);
    uint64_t stop = nowNs();
    double cpu = cpuSeconds() - cpu0;
    double serverCpu1 = opt.serverPid ? processCpuSeconds(opt.serverPid) : -1;
    double serverCpu = serverCpu0 >= 0 && serverCpu1 >= 0 ? serverCpu1 - serverCpu0 : -1;

    uint64_t sent = 0, uniq = 0, dup = 0, mis = 0;
    for (int s = 0; s < opt.senders; s++) sent += sentBy[s];
    for (int r = 0; r < opt.clients; r++) {
        uniq += cl[r].unique;
        dup += cl[r].dup;
        mis += cl[r].misrouted;
    }
    uint64_t expected = expectedTotal();
    qsort(lat, latLen, sizeof *lat, cmpU32);
#define PCT(p) (latLen ? lat[(size_t)((latLen - 1) * (p))] / 1000.0 : 0.0)
    double sendSecs = (sendStop - start) / 1e9, totalSecs = (stop - start) / 1e9;
    printf("{\"proto\":\"%s\",\"clients\":%d,\"ready\":%d,\"rooms\":%d,\"senders\":%d,"
           "\"rate\":%.3f,\"size\":%d,\"duration_s\":%.3f,\"drained_s\":%.3f,"
           "\"connect_s\":%.3f,\"sent\":%llu,\"expected\":%llu,\"received\":%llu,"
           "\"lost\":%lld,\"dup\":%llu,\"misrouted\":%llu,\"closed\":%llu,"
           "\"connect_errors\":%llu,\"late_sends\":%llu,"
           "\"offered_msgs_per_s\":%.1f,\"deliveries_per_s\":%.1f,"
           "\"p50_ms\":%.3f,\"p90_ms\":%.3f,\"p99_ms\":%.3f,\"max_ms\":%.3f,"
           "\"gen_cpu_s\":%.3f,\"gen_cpu_share\":%.3f,\"bytes_in\":%llu,"
           "\"window_s\":%.3f,\"server_cpu_s\":%.3f}\n",
           (const char *[]){"line", "ws", "wsjson", "irc"}[opt.proto], opt.clients,
           ready, opt.rooms, opt.senders, opt.rate, opt.size, sendSecs, totalSecs, connectSecs,
           (unsigned long long)sent, (unsigned long long)expected, (unsigned long long)uniq,
           (long long)(expected - uniq), (unsigned long long)dup, (unsigned long long)mis,
           (unsigned long long)(closedCount - closedBefore), (unsigned long long)connectErrors,
           (unsigned long long)lateSends, sent / sendSecs, uniq / sendSecs, PCT(0.5), PCT(0.9),
           PCT(0.99), latLen ? lat[latLen - 1] / 1000.0 : 0.0, cpu, cpu / totalSecs,
           (unsigned long long)bytesIn, totalSecs, serverCpu);
    return 0;
}
