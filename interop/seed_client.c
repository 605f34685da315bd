/*
 * seed_client: the "Hello Pipe World" CLIENT PROGRAM of the seed document
 * ("Introduction to Win32 Named Pipes (C++)"), in C with the same Win32 calls
 * and parameters: open the pipe for reading only, one synchronous ReadFile
 * of up to 127 UTF-16 units (254 bytes), print it, close.
 *
 *   seed_client.exe [PIPE_NAME]      (default \\.\pipe\my_pipe)
 *
 * Differences from the seed: the pipe name may be given (a bare name N means
 * \\.\pipe\N); failure lines add the GetLastError() code; no
 * system("pause"); and a bounded retry while the pipe does not exist yet
 * (see connect below).
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>

/* How long to wait for the server's pipe to appear: 100 tries, 50 ms apart. */
#define NOT_FOUND_RETRIES 100
#define NOT_FOUND_SLEEP_MS 50

static const wchar_t *pipe_name(int argc, wchar_t **argv)
{
    static wchar_t name[512];
    if (argc < 2)
        return L"\\\\.\\pipe\\my_pipe";
    if (wcsncmp(argv[1], L"\\\\", 2) == 0)
        return argv[1];
    swprintf(name, sizeof name / sizeof name[0], L"\\\\.\\pipe\\%ls", argv[1]);
    return name;
}

int wmain(int argc, wchar_t **argv)
{
    const wchar_t *name = pipe_name(argc, argv);
    wprintf(L"Connecting to pipe...\n");
    fflush(stdout);
    // Open the named pipe
    // Most of these parameters aren't very relevant for pipes.
    HANDLE pipe = INVALID_HANDLE_VALUE;
    /* The seed says "run the server first! The client program fails if the
     * pipe is not available", and fails at the first ERROR_FILE_NOT_FOUND. A
     * script that starts a server cannot know exactly when its pipe exists,
     * so this client retries ERROR_FILE_NOT_FOUND a bounded number of times
     * (5 s in all); any other error fails at once, as in the seed. */
    for (int attempt = 0;; attempt++) {
        pipe = CreateFileW(
            name,
            GENERIC_READ, // only need read access
            FILE_SHARE_READ | FILE_SHARE_WRITE,
            NULL,
            OPEN_EXISTING,
            FILE_ATTRIBUTE_NORMAL,
            NULL
        );
        if (pipe != INVALID_HANDLE_VALUE || GetLastError() != ERROR_FILE_NOT_FOUND ||
            attempt + 1 >= NOT_FOUND_RETRIES)
            break;
        Sleep(NOT_FOUND_SLEEP_MS);
    }
    if (pipe == INVALID_HANDLE_VALUE) {
        wprintf(L"Failed to connect to pipe. (error %lu)\n", (unsigned long)GetLastError());
        fflush(stdout);
        return 1;
    }
    wprintf(L"Reading data from pipe...\n");
    fflush(stdout);
    // The read operation will block until there is data to read
    wchar_t buffer[128];
    DWORD numBytesRead = 0;
    BOOL result = ReadFile(
        pipe,
        buffer, // the data from the pipe will be put here
        127 * sizeof(wchar_t), // number of bytes allocated
        &numBytesRead, // this will store number of bytes actually read
        NULL // not using overlapped IO
    );
    if (result) {
        buffer[numBytesRead / sizeof(wchar_t)] = '\0'; // null terminate the string
        wprintf(L"Number of bytes read: %lu\n", (unsigned long)numBytesRead);
        wprintf(L"Message: %ls\n", buffer);
    } else {
        wprintf(L"Failed to read data from the pipe. (error %lu)\n",
                (unsigned long)GetLastError());
    }
    fflush(stdout);
    // Close our pipe handle
    CloseHandle(pipe);
    wprintf(L"Done.\n");
    fflush(stdout);
    return 0;
}
