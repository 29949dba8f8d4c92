// The thread pool behind b2f::parallel_for (csrc/include/basenji2_fast/parallel.h).
//
// One pool per calling thread (thread_local), workers 1..W numbered so that worker i runs
// chunk i. A job is published as one 64-bit word, (sequence number << 16) | chunk count: a
// worker waits for the word to change, runs its chunk if its number is below the count and
// counts down `pending`; the caller runs chunk 0 and waits for `pending` to reach zero. The
// caller publishes the next job only after every participant of this one has finished, so
// a participant never misses its job; a worker without a chunk may skip jobs unseen, and it
// reads only the word. Waiting spins for a short while, then sleeps on the pool's condition
// variables (the mutex is taken around every notify, so no wake-up is lost).
//
// Fork: the child has only the forking thread. The atfork child handler bumps a generation
// number; a pool made in an older generation is leaked, never locked or joined, and the
// thread's next parallel_for builds a fresh one. The same handlers hold every ForkSafeMutex
// across the fork.
#include "basenji2_fast/parallel.h"

#include <pthread.h>
#include <signal.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

namespace b2f {
namespace parallel_detail {
namespace {

std::atomic<unsigned> g_generation{0};  // bumped in every child after a fork
thread_local bool t_inside = false;

void before_fork();
void after_fork_in_parent();
void after_fork_in_child();
const int g_atfork_registered = pthread_atfork(before_fork, after_fork_in_parent, after_fork_in_child);

// How long a waiting thread spins before it sleeps.
// Long enough to bridge the gaps between the back-to-back calls of a forward pass (a
// wake-up costs 10-50 us, comparable to a small layer's work), short enough not to steal a
// shared machine's cores (libgomp's much longer default spin made tf-small predictions
// 4-7x slower than this pool while other processes wanted the cores).
constexpr auto kSpin = std::chrono::microseconds(50);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// Spins until done() or kSpin has passed; true when done() became true.
template <typename Done>
bool spin_until(Done&& done) {
  const auto until = std::chrono::steady_clock::now() + kSpin;
  for (int i = 1;; ++i) {
    if (done()) return true;
    cpu_relax();
    if ((i & 63) == 0 && std::chrono::steady_clock::now() > until) return false;
  }
}

constexpr uint64_t kCountBits = 16;
constexpr uint64_t kCountMask = (uint64_t(1) << kCountBits) - 1;
static_assert(kMaxThreads <= int(kCountMask), "a job word holds the chunk count in 16 bits");

struct Pool {
  std::atomic<uint64_t> job{0};  // (sequence << kCountBits) | chunk count
  std::atomic<int> pending{0};   // chunks of the current job not yet finished by workers
  std::atomic<bool> stop{false};
  void (*fn)(void*, int) = nullptr;  // the current job, read by its participants only
  void* ctx = nullptr;
  std::mutex mutex;
  std::condition_variable wake, done;
  std::exception_ptr error;  // the first exception of the current job (under mutex)
  std::vector<pthread_t> workers;
  unsigned generation = g_generation.load(std::memory_order_relaxed);

  void record(std::exception_ptr e) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!error) error = e;
  }
};

struct WorkerStart {
  Pool* pool;
  int index;
  uint64_t seen;
};

void* worker_main(void* arg) {
  const WorkerStart start = *static_cast<WorkerStart*>(arg);
  delete static_cast<WorkerStart*>(arg);
  Pool& pool = *start.pool;
  t_inside = true;
  uint64_t seen = start.seen;
  for (;;) {
    const auto changed = [&] {
      return pool.job.load(std::memory_order_acquire) != seen || pool.stop.load(std::memory_order_acquire);
    };
    if (!spin_until(changed)) {
      std::unique_lock<std::mutex> lock(pool.mutex);
      pool.wake.wait(lock, changed);
    }
    if (pool.stop.load(std::memory_order_acquire)) return nullptr;
    seen = pool.job.load(std::memory_order_acquire);
    if (uint64_t(start.index) >= (seen & kCountMask)) continue;  // no chunk for this worker
    try {
      pool.fn(pool.ctx, start.index);
    } catch (...) {
      pool.record(std::current_exception());
    }
    if (pool.pending.fetch_sub(1, std::memory_order_acq_rel) == 1) {
      std::lock_guard<std::mutex> lock(pool.mutex);
      pool.done.notify_one();
    }
  }
}

void start_worker(Pool& pool, int index) {
  // Workers block every signal: asynchronous signals (SIGINT, ...) go to the threads that
  // handle them, as when the engine had no threads of its own.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, &old);
  pthread_t tid;
  auto* arg = new WorkerStart{&pool, index, pool.job.load(std::memory_order_relaxed)};
  const int rc = pthread_create(&tid, nullptr, worker_main, arg);
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (rc != 0) {
    delete arg;
    throw std::runtime_error("cannot start a compute thread: " + std::string(std::strerror(rc)));
  }
  pool.workers.push_back(tid);
}

void shut_down(Pool* pool) {
  {
    std::lock_guard<std::mutex> lock(pool->mutex);
    pool->stop.store(true, std::memory_order_release);
  }
  pool->wake.notify_all();
  for (pthread_t t : pool->workers) pthread_join(t, nullptr);
  delete pool;
}

// The calling thread's pool; joined when the thread ends (unless it is from before a fork).
struct Owner {
  Pool* pool = nullptr;
  ~Owner() {
    if (pool && pool->generation == g_generation.load(std::memory_order_relaxed)) shut_down(pool);
  }
};
thread_local Owner t_owner;

Pool& pool_with(int workers) {
  Pool*& p = t_owner.pool;
  if (p && p->generation != g_generation.load(std::memory_order_relaxed)) p = nullptr;  // made before a fork: leak it
  if (!p) p = new Pool;
  while (int(p->workers.size()) < workers) start_worker(*p, int(p->workers.size()) + 1);
  return *p;
}

// Marks the calling thread as inside a parallel_for for its lifetime.
struct Inside {
  Inside() { t_inside = true; }
  ~Inside() { t_inside = false; }
};

}  // namespace
}  // namespace parallel_detail

// Every live ForkSafeMutex, in a list under its own lock; the fork handlers hold them all.
struct ForkRegistry {
  static std::mutex& lock() {
    static std::mutex m;
    return m;
  }
  static ForkSafeMutex*& head() {
    static ForkSafeMutex* h = nullptr;
    return h;
  }
  static void lock_all() {
    lock().lock();
    for (ForkSafeMutex* m = head(); m; m = m->next_) m->m_.lock();
  }
  static void unlock_all() {
    for (ForkSafeMutex* m = head(); m; m = m->next_) m->m_.unlock();
    lock().unlock();
  }
};

ForkSafeMutex::ForkSafeMutex() {
  std::lock_guard<std::mutex> g(ForkRegistry::lock());
  next_ = ForkRegistry::head();
  if (next_) next_->prev_ = this;
  ForkRegistry::head() = this;
}

ForkSafeMutex::~ForkSafeMutex() {
  std::lock_guard<std::mutex> g(ForkRegistry::lock());
  (prev_ ? prev_->next_ : ForkRegistry::head()) = next_;
  if (next_) next_->prev_ = prev_;
}

namespace parallel_detail {
namespace {
void before_fork() { ForkRegistry::lock_all(); }
void after_fork_in_parent() { ForkRegistry::unlock_all(); }
void after_fork_in_child() {
  g_generation.fetch_add(1, std::memory_order_relaxed);
  ForkRegistry::unlock_all();  // the forking thread, the child's only one, holds them
}
}  // namespace

bool inside() { return t_inside; }

void run(int nchunks, void (*fn)(void*, int), void* ctx) {
  (void)g_atfork_registered;
  if (nchunks <= 1 || t_inside) {
    Inside in;
    for (int i = 0; i < nchunks; ++i) fn(ctx, i);
    return;
  }
  Pool& pool = pool_with(nchunks - 1);
  Inside in;
  pool.fn = fn, pool.ctx = ctx;
  pool.error = nullptr;
  pool.pending.store(nchunks - 1, std::memory_order_relaxed);
  const uint64_t seq = (pool.job.load(std::memory_order_relaxed) >> kCountBits) + 1;
  pool.job.store((seq << kCountBits) | uint64_t(nchunks), std::memory_order_release);
  { std::lock_guard<std::mutex> lock(pool.mutex); }
  pool.wake.notify_all();
  std::exception_ptr mine;
  try {
    fn(ctx, 0);
  } catch (...) {
    mine = std::current_exception();
  }
  const auto finished = [&] { return pool.pending.load(std::memory_order_acquire) == 0; };
  if (!spin_until(finished)) {
    std::unique_lock<std::mutex> lock(pool.mutex);
    pool.done.wait(lock, finished);
  }
  std::exception_ptr first;
  {
    std::lock_guard<std::mutex> lock(pool.mutex);
    first = mine ? mine : pool.error;
    pool.error = nullptr;
  }
  if (first) std::rethrow_exception(first);
}

}  // namespace parallel_detail
}  // namespace b2f
