//! Synchronization primitives: fences, fence arrays and chains, syncobjs, reservation
//! objects, ww-mutex multi-object locking, user (memory) fences and the lock-order checker.
