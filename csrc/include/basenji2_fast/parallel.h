// b2f::parallel_for: the CPU engine's own thread pool, safe across fork.
//
//   template <typename Body> void parallel_for(int64_t n, int threads, Body&& body);
//
// Runs body(begin, end) over [0, n) split into min(threads, n) contiguous chunks, one per
// thread, and returns when every chunk is done. Static chunking, as OpenMP's
// schedule(static): with t chunks, q = n / t and r = n % t, chunk i is
// [i*q + min(i, r), that + q + (i < r)) -- a pure function of (n, t), so a body whose
// iterations write disjoint outputs gives bit-identical results for any thread count.
// Chunk 0 runs on the calling thread, chunk i >= 1 on the calling thread's worker i.
//
// - threads is clamped to kMaxThreads (1024).
// - threads <= 1 or n == 1: body(0, n) on the calling thread; no thread is ever created.
//   n <= 0: body is not called.
// - Nesting: a parallel_for called from inside a body (on any thread) runs serially as
//   body(0, n) on that thread -- as OpenMP with nesting off; no deadlock, no extra threads.
// - Each calling thread has its own workers (made on first use, kept while it lives, grown
//   when more threads are asked for, joined when the thread ends), so several Python
//   threads may run the engine at once without waiting for each other.
// - fork: the child keeps none of the parent's threads; a pthread_atfork handler marks every
//   pool stale and the next parallel_for in the child starts fresh workers (the stale pool
//   is abandoned, never touched: its locks may have been held by threads that are gone).
// - An exception thrown by a body is caught, the other chunks finish, and the first one
//   caught is rethrown to the caller.
//
// Idle workers spin briefly (~50 us) before sleeping on a condition variable, so the
// back-to-back calls of one forward pass do not pay a wake-up each.
//
// b2f::ForkSafeMutex: a std::mutex that fork never leaves locked in the child. Every live one
// is locked by a pthread_atfork prepare handler and unlocked again in parent and child, so a
// fork waits for other threads' critical sections to end (a model shared with a forked child
// would otherwise deadlock on a lock that a thread of the parent held at the fork). For
// short critical sections that wait for nothing else; a thread must not fork while holding one.
#pragma once
#include <algorithm>
#include <cstdint>
#include <mutex>

namespace b2f {

constexpr int kMaxThreads = 1024;

namespace parallel_detail {
// Runs fn(ctx, i) for i in [0, nchunks): i = 0 on the calling thread, the rest on its
// workers; returns when all are done, rethrowing the first exception a chunk threw.
void run(int nchunks, void (*fn)(void*, int), void* ctx);
// True on a worker thread, and on a calling thread while its parallel_for runs.
bool inside();
}  // namespace parallel_detail

class ForkSafeMutex {
 public:
  ForkSafeMutex();  // registers it for the fork handlers
  ~ForkSafeMutex();
  ForkSafeMutex(const ForkSafeMutex&) = delete;
  ForkSafeMutex& operator=(const ForkSafeMutex&) = delete;
  void lock() { m_.lock(); }
  void unlock() { m_.unlock(); }
  bool try_lock() { return m_.try_lock(); }

 private:
  friend struct ForkRegistry;
  std::mutex m_;
  ForkSafeMutex* prev_ = nullptr;
  ForkSafeMutex* next_ = nullptr;
};

template <typename Body>
void parallel_for(int64_t n, int threads, Body&& body) {
  if (n <= 0) return;
  const int64_t t = std::min<int64_t>(std::min(std::max(threads, 1), kMaxThreads), n);
  if (t == 1 || parallel_detail::inside()) {
    body(int64_t(0), n);
    return;
  }
  struct Job {
    Body* body;
    int64_t n, t;
  } job{&body, n, t};
  parallel_detail::run(int(t), [](void* p, int i) {
    const Job& j = *static_cast<const Job*>(p);
    const int64_t q = j.n / j.t, r = j.n % j.t;
    const int64_t begin = i * q + std::min<int64_t>(i, r);
    (*j.body)(begin, begin + q + (i < r ? 1 : 0));
  }, &job);
}

}  // namespace b2f
