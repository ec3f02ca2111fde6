//! Hostile inputs and a broken network (issue 9): each test drives the binary against a loopback
//! server that misbehaves in exactly one way, and checks the exit code, the message, that no
//! secret leaks (every `Finished` checks the canaries) and, where data is involved, that the meter
//! ends up holding exactly the truth. docs/robustness.md lists every input tested here.

// Items 1 and 5: a value that cannot be an HTTP header; secrets echoed back by a server.
mod secrets;
// Item 6: unbounded windows, and progress kept chunk by chunk.
mod windows;
// Item 7: batches the meter refuses for their size.
mod outbox;
// Item 8: messages that name the real cause.
mod diagnostics;
// Issue 18, classes 1, 2 and 7 on the database source: odd values, a typo'd workspace, a column type.
mod database;
// Issue 18 class 2: a reader that went away, a clock before 1970, dates beyond the calendar.
mod panics;
// Issue 18 class 4: URL passwords as written, keys in any case.
mod leaks;
// Issue 18 classes 7 and 8: one reading of every variable, what servers send, clear messages.
mod readings;
// Issue 18 classes 6 and 8 on the file system: planted links, a full disk.
mod files;
// Issue 18 class 5: endless answers, peak memory measured.
mod memory;
