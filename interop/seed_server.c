/*
 * seed_server: the "Hello Pipe World" SERVER PROGRAM of the seed document
 * ("Introduction to Win32 Named Pipes (C++)"), in C with the same Win32 calls
 * and parameters: one byte-mode, outbound-only pipe instance with no buffers;
 * wait for a client, send L" ***Hello Pipe World***" (UTF-16LE, no
 * terminator) in one synchronous WriteFile, close.
 *
 *   seed_server.exe [PIPE_NAME]      (default \\.\pipe\my_pipe)
 *
 * Differences from the seed: the pipe name may be given (a bare name N means
 * \\.\pipe\N) so that runs can use unique names; failure lines add the
 * GetLastError() code the seed's comments mention; no system("pause").
 * Every line is flushed at once, like the seed's `endl`, so a script can
 * wait for "Waiting for a client to connect to the pipe..." (printed once
 * the pipe exists).
 */
#include <windows.h>
#include <stdio.h>
#include <stdlib.h>
#include <wchar.h>

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
    wprintf(L"Creating an instance of a named pipe...\n");
    fflush(stdout);
    // Create a pipe to send data
    HANDLE pipe = CreateNamedPipeW(
        name, // name of the pipe
        PIPE_ACCESS_OUTBOUND, // 1-way pipe -- send only
        PIPE_TYPE_BYTE, // send data as a byte stream
        1, // only allow 1 instance of this pipe
        0, // no outbound buffer
        0, // no inbound buffer
        0, // use default wait time
        NULL // use default security attributes
    );
    if (pipe == NULL || pipe == INVALID_HANDLE_VALUE) {
        wprintf(L"Failed to create outbound pipe instance. (error %lu)\n",
                (unsigned long)GetLastError());
        fflush(stdout);
        return 1;
    }
    wprintf(L"Waiting for a client to connect to the pipe...\n");
    fflush(stdout);
    // This call blocks until a client process connects to the pipe
    BOOL result = ConnectNamedPipe(pipe, NULL);
    if (!result) {
        wprintf(L"Failed to make connection on named pipe. (error %lu)\n",
                (unsigned long)GetLastError());
        fflush(stdout);
        CloseHandle(pipe); // close the pipe
        return 1;
    }
    wprintf(L"Sending data to pipe...\n");
    fflush(stdout);
    // This call blocks until a client process reads all the data
    const wchar_t *data = L" ***Hello Pipe World***";
    DWORD numBytesWritten = 0;
    result = WriteFile(
        pipe, // handle to our outbound pipe
        data, // data to send
        (DWORD)(wcslen(data) * sizeof(wchar_t)), // length of data to send (bytes)
        &numBytesWritten, // will store actual amount of data sent
        NULL // not using overlapped IO
    );
    if (result) {
        wprintf(L"Number of bytes sent: %lu\n", (unsigned long)numBytesWritten);
    } else {
        wprintf(L"Failed to send data. (error %lu)\n", (unsigned long)GetLastError());
    }
    fflush(stdout);
    // Close the pipe (automatically disconnects client too)
    CloseHandle(pipe);
    wprintf(L"Done.\n");
    fflush(stdout);
    return 0;
}
