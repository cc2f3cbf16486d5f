//! gpu-tests: end-to-end and conformance tests.
//!
//! Will own: the xe_vm conformance scenarios run through the scheme from separate client
//! processes, invalid-input and isolation tests, client-death tests, and a live-daemon
//! request fuzzer. Helpers shared by those tests live here; the tests live in `tests/`.

#![forbid(unsafe_code)]
