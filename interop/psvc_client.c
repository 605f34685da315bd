/*
 * psvc_client: a minimal pipesvc client in C99 on the raw Win32 API.
 *
 * Written from PROTOCOL.md alone (protocol version 1), in the style of the
 * "Hello Pipe World" seed: CreateFileW / ReadFile / WriteFile / CloseHandle,
 * synchronous I/O, no pipesvc code.
 *
 *   psvc_client.exe PIPE_NAME MESSAGE
 *
 * PIPE_NAME is a full pipe name (\\.\pipe\N) or a bare name N, which means
 * \\.\pipe\N as with pipesvc itself. The client reads the server's HELLO,
 * answers with its own, sends MESSAGE (UTF-8) as one REQUEST, prints every
 * NOTIFY as "notify: <text>" until the RESPONSE with the request's id
 * arrives, prints "response: <text>" and closes the pipe.
 *
 * Exit status: 0 success; 1 usage; 2 cannot connect; 3 the server answered
 * with an ERROR frame ("error <code>: <message>"); 4 protocol violation,
 * I/O error or connection closed before the response.
 *
 * Build: x86_64-w64-mingw32-gcc -std=c99 -O2 -Wall -Wextra -municode
 *        -o psvc_client.exe psvc_client.c
 */
#include <windows.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

/* Frame kinds (PROTOCOL.md, "Kinds"). */
enum {
    KIND_HELLO = 1,
    KIND_REQUEST = 2,
    KIND_RESPONSE = 3,
    KIND_ERROR = 4,
    KIND_NOTIFY = 5,
    KIND_GOODBYE = 6,
    KIND_PING = 7,
    KIND_PONG = 8
};

#define HEADER_LEN 10u          /* u32 length, u8 kind, u8 flags, u32 id */
#define MIN_LENGTH 6u           /* `length` of a frame with an empty payload */
#define PROTOCOL_VERSION 1u
/* Our own limit (PROTOCOL.md allows a client a smaller one): frames above it
 * are refused even if the server's announced maximum is larger. It also
 * bounds the server's HELLO, which arrives before the maximum is known. */
#define CLIENT_MAX_LENGTH (16u * 1024u * 1024u)
#define CONNECT_TIMEOUT_MS 10000u
#define REQUEST_ID 0x2Au        /* any id except 0 */

#define EXIT_USAGE 1
#define EXIT_CONNECT 2
#define EXIT_ERROR_FRAME 3
#define EXIT_PROTOCOL 4

static void fail(int status, const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("psvc_client: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(status);
}

static uint32_t get_u32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint16_t get_u16(const unsigned char *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static void put_u32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)v;
    p[1] = (unsigned char)(v >> 8);
    p[2] = (unsigned char)(v >> 16);
    p[3] = (unsigned char)(v >> 24);
}

/* ---- connecting ------------------------------------------------------- */

/* Opens the pipe, retrying ERROR_PIPE_BUSY (every instance busy) and
 * ERROR_FILE_NOT_FOUND (no server yet, or it is restarting) with a short
 * backoff until CONNECT_TIMEOUT_MS has passed. */
static HANDLE connect_pipe(const wchar_t *name)
{
    ULONGLONG deadline = GetTickCount64() + CONNECT_TIMEOUT_MS;
    DWORD backoff = 10;
    for (;;) {
        HANDLE pipe = CreateFileW(name, GENERIC_READ | GENERIC_WRITE, 0, NULL,
                                  OPEN_EXISTING, 0, NULL);
        if (pipe != INVALID_HANDLE_VALUE)
            return pipe;
        DWORD err = GetLastError();
        ULONGLONG now = GetTickCount64();
        if ((err != ERROR_PIPE_BUSY && err != ERROR_FILE_NOT_FOUND) || now >= deadline)
            fail(EXIT_CONNECT, "cannot connect to %ls: error %lu%s", name, (unsigned long)err,
                 err == ERROR_PIPE_BUSY || err == ERROR_FILE_NOT_FOUND ? " (timed out)" : "");
        DWORD left = (DWORD)(deadline - now);
        if (err == ERROR_PIPE_BUSY) {
            /* Wait for an instance to become free; if the wait itself fails
             * (for example the server went away), fall back to sleeping. */
            if (WaitNamedPipeW(name, left < 250 ? left : 250))
                continue;
        }
        Sleep(backoff < left ? backoff : left);
        if (backoff < 200)
            backoff *= 2;
    }
}

/* ---- reading and writing ---------------------------------------------- */

/* Bytes received but not yet consumed: frames are reassembled from this by
 * their length prefix, whatever the read boundaries were. */
struct reader {
    HANDLE pipe;
    unsigned char *buf;
    size_t cap, start, end;
};

/* Makes at least `need` unconsumed bytes available. Returns 0 on success,
 * -1 if the server closed the connection first; exits on I/O errors. */
static int fill(struct reader *r, size_t need)
{
    if (r->end - r->start >= need)
        return 0;
    if (r->start > 0) { /* move what is left to the front */
        memmove(r->buf, r->buf + r->start, r->end - r->start);
        r->end -= r->start;
        r->start = 0;
    }
    if (r->cap < need) {
        size_t cap = r->cap ? r->cap : 4096;
        while (cap < need)
            cap *= 2;
        unsigned char *buf = realloc(r->buf, cap);
        if (!buf)
            fail(EXIT_PROTOCOL, "out of memory (%zu bytes)", cap);
        r->buf = buf;
        r->cap = cap;
    }
    while (r->end < need) {
        DWORD want = (DWORD)(r->cap - r->end > 65536 ? 65536 : r->cap - r->end);
        DWORD got = 0;
        if (!ReadFile(r->pipe, r->buf + r->end, want, &got, NULL)) {
            DWORD err = GetLastError();
            if (err == ERROR_BROKEN_PIPE || err == ERROR_PIPE_NOT_CONNECTED)
                return -1; /* the server closed its end */
            if (err != ERROR_MORE_DATA) /* message mode: the rest follows */
                fail(EXIT_PROTOCOL, "ReadFile failed: error %lu", (unsigned long)err);
        } else if (got == 0) {
            /* No frame is empty, so a successful zero-byte read means the
             * server closed the pipe. */
            return -1;
        }
        r->end += got;
    }
    return 0;
}

struct frame {
    unsigned kind;
    uint32_t id;
    const unsigned char *payload; /* points into the reader; valid until the next read */
    size_t len;
};

/* Reads the next frame. Returns 0, or -1 if the connection closed cleanly
 * between frames. `max_length` is the largest `length` value accepted. */
static int read_frame(struct reader *r, uint32_t max_length, struct frame *f)
{
    if (fill(r, 4) < 0) {
        if (r->end != r->start)
            fail(EXIT_PROTOCOL, "connection closed in the middle of a frame");
        return -1;
    }
    uint32_t length = get_u32(r->buf + r->start);
    /* Check the length before reading (or allocating) the rest. */
    if (length < MIN_LENGTH)
        fail(EXIT_PROTOCOL, "malformed frame: length %lu < 6", (unsigned long)length);
    if (length > max_length)
        fail(EXIT_PROTOCOL, "frame too large: length %lu > maximum %lu",
             (unsigned long)length, (unsigned long)max_length);
    if (fill(r, 4 + (size_t)length) < 0)
        fail(EXIT_PROTOCOL, "connection closed in the middle of a frame");
    const unsigned char *h = r->buf + r->start;
    f->kind = h[4];
    if (h[5] != 0)
        fail(EXIT_PROTOCOL, "malformed frame: flags 0x%02x", h[5]);
    if (f->kind < KIND_HELLO || f->kind > KIND_PONG)
        fail(EXIT_PROTOCOL, "unknown frame kind %u", f->kind);
    f->id = get_u32(h + 6);
    f->payload = h + HEADER_LEN;
    f->len = length - MIN_LENGTH;
    r->start += 4 + (size_t)length;
    return 0;
}

static void write_all(HANDLE pipe, const unsigned char *data, size_t len)
{
    while (len > 0) {
        DWORD chunk = (DWORD)(len > 65536 ? 65536 : len), put = 0;
        if (!WriteFile(pipe, data, chunk, &put, NULL))
            fail(EXIT_PROTOCOL, "WriteFile failed: error %lu", (unsigned long)GetLastError());
        data += put;
        len -= put;
    }
}

static void write_frame(HANDLE pipe, unsigned kind, uint32_t id, const unsigned char *payload,
                        size_t len)
{
    unsigned char *frame = malloc(HEADER_LEN + len);
    if (!frame)
        fail(EXIT_PROTOCOL, "out of memory");
    put_u32(frame, (uint32_t)(MIN_LENGTH + len));
    frame[4] = (unsigned char)kind;
    frame[5] = 0; /* flags */
    put_u32(frame + 6, id);
    if (len)
        memcpy(frame + HEADER_LEN, payload, len);
    write_all(pipe, frame, HEADER_LEN + len);
    free(frame);
}

/* Prints LABEL: TEXT, TEXT being payload bytes (UTF-8 by our convention). */
static void print_text(const char *label, const unsigned char *text, size_t len)
{
    fputs(label, stdout);
    fwrite(text, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
}

/* ERROR payload: u16 code, then a UTF-8 message. */
static void print_error_and_exit(const struct frame *f)
{
    if (f->len < 2)
        fail(EXIT_PROTOCOL, "malformed ERROR frame (%zu-byte payload)", f->len);
    printf("error %u: ", (unsigned)get_u16(f->payload));
    print_text("", f->payload + 2, f->len - 2);
    exit(EXIT_ERROR_FRAME);
}

static char *to_utf8(const wchar_t *w)
{
    int n = WideCharToMultiByte(CP_UTF8, 0, w, -1, NULL, 0, NULL, NULL);
    char *s = n > 0 ? malloc((size_t)n) : NULL;
    if (!s || WideCharToMultiByte(CP_UTF8, 0, w, -1, s, n, NULL, NULL) != n)
        fail(EXIT_USAGE, "cannot convert the message to UTF-8");
    return s;
}

int wmain(int argc, wchar_t **argv)
{
    if (argc != 3) {
        fputs("usage: psvc_client.exe PIPE_NAME MESSAGE\n", stderr);
        return EXIT_USAGE;
    }
    SetConsoleOutputCP(CP_UTF8);

    /* A bare name N means \\.\pipe\N. */
    const wchar_t *prefix = L"\\\\.\\pipe\\";
    size_t name_len = wcslen(argv[1]) + wcslen(prefix) + 1;
    wchar_t *name = malloc(name_len * sizeof *name);
    if (!name)
        fail(EXIT_USAGE, "out of memory");
    if (wcsncmp(argv[1], L"\\\\", 2) == 0)
        wcscpy(name, argv[1]);
    else
        swprintf(name, name_len, L"%ls%ls", prefix, argv[1]);
    char *message = to_utf8(argv[2]);
    size_t message_len = strlen(message);

    struct reader r = {0};
    r.pipe = connect_pipe(name);
    struct frame f;

    /* 1. The server's HELLO (or ERROR/GOODBYE and close). */
    if (read_frame(&r, CLIENT_MAX_LENGTH, &f) < 0)
        fail(EXIT_PROTOCOL, "server closed the connection before its HELLO");
    if (f.kind == KIND_ERROR)
        print_error_and_exit(&f);
    if (f.kind == KIND_GOODBYE) {
        fflush(stdout);
        fprintf(stderr, "psvc_client: server said GOODBYE before HELLO: %.*s\n", (int)f.len,
                (const char *)f.payload);
        return EXIT_PROTOCOL;
    }
    if (f.kind != KIND_HELLO)
        fail(EXIT_PROTOCOL, "expected HELLO, got frame kind %u", f.kind);
    if (f.len < 10 || memcmp(f.payload, "PSVC", 4) != 0)
        fail(EXIT_PROTOCOL, "malformed server HELLO (bad magic or %zu-byte payload)", f.len);
    unsigned version = get_u16(f.payload + 4);
    if (version != PROTOCOL_VERSION) {
        CloseHandle(r.pipe);
        fail(EXIT_PROTOCOL, "server speaks protocol version %u, not %u", version,
             PROTOCOL_VERSION);
    }
    uint32_t max_length = get_u32(f.payload + 6);
    if (max_length < MIN_LENGTH)
        fail(EXIT_PROTOCOL, "server HELLO announces a maximum frame length of %lu",
             (unsigned long)max_length);
    printf("server: \"%.*s\", protocol %u, max frame length %lu\n", (int)(f.len - 10),
           (const char *)f.payload + 10, version, (unsigned long)max_length);
    /* Accept at most the announced maximum (and never more than our own). */
    if (max_length > CLIENT_MAX_LENGTH)
        max_length = CLIENT_MAX_LENGTH;

    /* 2. Our HELLO: magic, u16 version. */
    static const unsigned char hello[6] = {'P', 'S', 'V', 'C', PROTOCOL_VERSION, 0};
    write_frame(r.pipe, KIND_HELLO, 0, hello, sizeof hello);

    /* 3. One REQUEST; it must fit the server's maximum. */
    if (message_len > (size_t)get_u32(f.payload + 6) - MIN_LENGTH)
        fail(EXIT_PROTOCOL, "message of %zu bytes exceeds the server's maximum frame",
             message_len);
    write_frame(r.pipe, KIND_REQUEST, REQUEST_ID, (const unsigned char *)message, message_len);

    /* 4. Frames until the answer: NOTIFY may come before or after it. */
    int goodbye = 0;
    for (;;) {
        if (read_frame(&r, max_length, &f) < 0)
            fail(EXIT_PROTOCOL, "connection closed before the response%s",
                 goodbye ? " (after GOODBYE)" : "");
        switch (f.kind) {
        case KIND_NOTIFY:
            print_text("notify: ", f.payload, f.len);
            break;
        case KIND_RESPONSE:
            if (f.id != REQUEST_ID)
                fail(EXIT_PROTOCOL, "RESPONSE for unknown request id %lu", (unsigned long)f.id);
            print_text("response: ", f.payload, f.len);
            CloseHandle(r.pipe);
            free(r.buf);
            free(message);
            free(name);
            return 0;
        case KIND_ERROR:
            /* Our request's id, or 0 for the whole connection. */
            if (f.id != REQUEST_ID && f.id != 0)
                fail(EXIT_PROTOCOL, "ERROR for unknown request id %lu", (unsigned long)f.id);
            print_error_and_exit(&f);
            break;
        case KIND_GOODBYE:
            /* The server is shutting down; answers to earlier requests still
             * arrive, so keep reading. */
            fflush(stdout);
            fprintf(stderr, "psvc_client: server said GOODBYE: %.*s\n", (int)f.len,
                    (const char *)f.payload);
            goodbye = 1;
            break;
        default:
            fail(EXIT_PROTOCOL, "unexpected frame kind %u from the server", f.kind);
        }
    }
}
