// Member axes: one call for every member of a vmapped ensemble.
//
// An ensemble (jaxrnn/train/ensemble.py) vmaps a model over K members, each with its own
// weights. A handler declared with JAXRNN_MEMBER_HANDLER (below) takes the whole ensemble in one
// call: ops._call then declares it vmap_method="broadcast_all", so that under vmap every operand
// and result gains the same leading axes (one per vmap, unbatched operands broadcast), and the
// handler runs the kernel once per member on views of that member's slice of every buffer.
// Members never meet, so threads take whole members, one at a time from a shared counter, with
// no barrier until the last member is done (the per-step hand-off of a unit split weighs most
// on the small models ensembles are made of). A thread that loses its core holds up only the
// member it is on. The kernel inside keeps to its thread (running_members).
//
// How many axes are member axes is read from one operand, the anchor, whose rank per member is
// fixed (`lengths`, always (B,) or the placeholder (1,)); every other operand must lead with
// the same axes.

#ifndef JAXRNN_KERNELS_MEMBERS_H_
#define JAXRNN_KERNELS_MEMBERS_H_

#include <atomic>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "ffi_glue.h"
#include "phase_team.h"
#include "team.h"

namespace {

// Below this many elements in all buffers of all members together, the members run on the
// calling thread (the work is then some tens of microseconds, about what starting a helper
// costs). The number of elements stands in for the work, which the wrapper does not know.
constexpr int64_t kMemberSplitMinElements = 1 << 16;

[[maybe_unused]] int member_team_size(ffi::ThreadPool& pool, int64_t members, int64_t elements) {
  if (members < 2 || running_members()) return 1;
  int n = threads_from_env();
  if (!n) {
    if (elements < kMemberSplitMinElements) return 1;
    const int hw = (int)std::thread::hardware_concurrency();
    n = (int)std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), hw > 0 ? hw : 1));
  }
  return (int)std::min<int64_t>(n, members);
}

class MemberAxes {
 public:
  template <class Buf>
  MemberAxes(const char* target, Buf& anchor, const char* name, size_t rank) : target_(target) {
    const auto d = dims_of(anchor);
    if (d.size() < rank) {
      fail(std::string(name) + " must have rank " + std::to_string(rank) +
           " (plus leading member axes), got shape " + spell(d));
      return;
    }
    lead_.assign(d.begin(), d.begin() + (d.size() - rank));
    for (int64_t n : lead_) count_ *= n;
    anchor_ = name;
  }

  // No member axes: the handler is the kernel itself.
  bool none() const { return ok() && lead_.empty(); }
  int64_t count() const { return count_; }

  // One view per member of `buf` (which must lead with the member axes): the member's slice,
  // its shape the rest of buf's. The views point into buf's own shape, which outlives the call.
  template <ffi::DataType D, class Buf>
  std::vector<XLA_FFI_Buffer> views(Buf& buf, const char* name) {
    const auto d = dims_of(buf);
    const size_t L = lead_.size();
    bool leads = d.size() >= L;
    for (size_t i = 0; leads && i < L; ++i) leads = d[i] == lead_[i];
    if (!leads) {
      fail(std::string(name) + " must lead with the member axes " +
           spell(ffi::Span<const int64_t>(lead_.data(), lead_.size())) + " of " + anchor_ +
           ", got shape " + spell(d));
      return {};
    }
    int64_t per = 1;
    for (size_t i = L; i < d.size(); ++i) per *= d[i];
    elements_ += per * count_;
    char* base = static_cast<char*>(data_of(buf));
    std::vector<XLA_FFI_Buffer> out((size_t)count_);
    for (int64_t m = 0; m < count_; ++m) {
      XLA_FFI_Buffer& v = out[(size_t)m];
      v.struct_size = XLA_FFI_Buffer_STRUCT_SIZE;
      v.extension_start = nullptr;
      v.dtype = static_cast<XLA_FFI_DataType>(D);
      v.data = base + (size_t)m * per * sizeof(ffi::NativeType<D>);
      v.rank = (int64_t)(d.size() - L);
      v.dims = const_cast<int64_t*>(d.begin() + L);
    }
    return out;
  }

  // body(m) for every member m; the first member's error that failed, if any.
  template <class Body>
  ffi::Error run(ffi::ThreadPool& pool, Body body) {
    std::vector<ffi::Error> errors((size_t)count_);
    const int nthreads = member_team_size(pool, count_, elements_);
    if (nthreads <= 1) {
      for (int64_t m = 0; m < count_; ++m) errors[(size_t)m] = body(m);
    } else {
      std::atomic<int64_t> next{0};
      run_phases(&pool, 1, nthreads, [&](int, int) {
        const bool was = running_members();
        running_members() = true;
        for (int64_t m; (m = next.fetch_add(1, std::memory_order_relaxed)) < count_;)
          errors[(size_t)m] = body(m);
        running_members() = was;
      });
    }
    for (int64_t m = 0; m < count_; ++m)
      if (errors[(size_t)m].failure())
        return ffi::Error(errors[(size_t)m].errc().value_or(ffi::ErrorCode::kInternal),
                          "member " + std::to_string(m) + " of " + std::to_string(count_) +
                              ": " + errors[(size_t)m].message());
    return ffi::Error::Success();
  }

  bool ok() const { return error_.empty(); }
  ffi::Error error() const {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, error_);
  }

 private:
  template <ffi::DataType D>
  static void* data_of(ffi::Buffer<D>& b) { return b.untyped_data(); }
  template <ffi::DataType D>
  static void* data_of(ffi::Result<ffi::Buffer<D>>& b) { return b->untyped_data(); }
  void fail(const std::string& what) {
    if (ok()) error_ = std::string(target_) + ": " + what;
  }
  const char* target_;
  const char* anchor_ = "";
  std::vector<int64_t> lead_;
  int64_t count_ = 1;
  int64_t elements_ = 0;
  std::string error_;
};

}  // namespace

// The member-wise handler of kernel Name (see "member axes" above): views of every operand per
// member, then Name per member. Operand names get a suffix (x -> x_members_) for their views.
#define JAXRNN_MV_ARG(T, n) const auto n##_members_ = members_.views<ffi::T>(n, #n);
#define JAXRNN_MV_ATTR(T, n)
#define JAXRNN_MP_ARG(T, n) , n
#define JAXRNN_MC_ARG(T, n) , ffi::Buffer<ffi::T>(&n##_members_[(size_t)member_])
#define JAXRNN_MC_RET(T, n) , ffi::ResultBuffer<ffi::T>(ffi::Buffer<ffi::T>(&n##_members_[(size_t)member_]))

// At file scope, after the kernel, instead of JAXRNN_HANDLER: the exported handler takes leading
// member axes (read from operand `anchor`, of rank `rank` per member) on every operand, and
// "<symbol>_member_anchor" names the anchor, which tells ops._call the handler batches members.
#define JAXRNN_MEMBER_HANDLER(symbol, Name, OPERANDS, anchor, rank)                          \
  namespace {                                                                                \
  JAXRNN_KERNEL(Name##Members, OPERANDS) {                                                   \
    MemberAxes members_(#symbol, anchor, #anchor, rank);                                     \
    if (members_.none()) return Name(pool OPERANDS(JAXRNN_MP_ARG, JAXRNN_MP_ARG, JAXRNN_MP_ARG)); \
    OPERANDS(JAXRNN_MV_ARG, JAXRNN_MV_ARG, JAXRNN_MV_ATTR)                                   \
    if (!members_.ok()) return members_.error();                                             \
    return members_.run(pool, [&](int64_t member_) {                                         \
      return Name(pool OPERANDS(JAXRNN_MC_ARG, JAXRNN_MC_RET, JAXRNN_MP_ARG));               \
    });                                                                                      \
  }                                                                                          \
  }                                                                                          \
  JAXRNN_HANDLER(symbol, Name##Members, OPERANDS)                                            \
  extern "C" __attribute__((visibility("default"))) const char* symbol##_member_anchor() {  \
    return #anchor;                                                                          \
  }

#endif  // JAXRNN_KERNELS_MEMBERS_H_
