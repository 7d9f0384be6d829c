// AppendJournal (see append_journal.h). Layout, little-endian as the host
// writes it (a journal never leaves the machine that wrote it):
//   header (64 bytes): u32 magic "DJH1" | u32 version 1 | u64 generation | zeros
//   records from offset 64, each:
//     u32 magic "DJR1" | u32 length of what follows the crc | u32 crc32 of it
//     u64 generation
//     i64 run_pk, first_seq, count, first_pos, base_ts, max_ts, payload_bytes
//     u32 run id length | u32 body length | run id | body
//   then whatever an earlier generation left, or zeros (the file is
//   preallocated to its capacity).
#include "store/append_journal.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace dispatch::internal {
namespace {

constexpr uint32_t kFileMagic = 0x31484A44;  // "DJH1"
constexpr uint32_t kMagic = 0x31524A44;      // "DJR1"
constexpr size_t kHeader = 12;               // magic, length, crc
constexpr size_t kFixed = 8 + 7 * 8 + 2 * 4;
// A record holds one small append; anything larger is not a record of ours.
constexpr uint32_t kMaxRecord = 64u << 20;
// How far ahead of the write position pages are kept dirty: more than the
// records written between two copies into SQLite (≤ 256 small appends).
constexpr uint64_t kAhead = 64 * 1024;
constexpr uint64_t kPage = 4096;

constexpr std::array<uint32_t, 256> MakeCrcTable() {
  std::array<uint32_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
    t[i] = c;
  }
  return t;
}
constexpr std::array<uint32_t, 256> kCrcTable = MakeCrcTable();

uint32_t Crc32(const char* p, size_t n) {
  uint32_t c = 0xFFFFFFFFu;
  for (size_t i = 0; i < n; ++i) c = kCrcTable[(c ^ static_cast<uint8_t>(p[i])) & 0xFF] ^ (c >> 8);
  return c ^ 0xFFFFFFFFu;
}

template <typename T>
void Put(std::string* out, T v) {
  out->append(reinterpret_cast<const char*>(&v), sizeof v);
}
template <typename T>
T Get(const char* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

Status Errno(std::string_view what, const std::string& path) {
  return Status::IOError(fmt::format("{} {}: {}", what, path, std::strerror(errno)));
}

}  // namespace

Result<std::unique_ptr<AppendJournal>> AppendJournal::Open(const std::string& path,
                                                           uint64_t capacity) {
  capacity = (capacity + kPage - 1) / kPage * kPage;
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot open the append journal", path);
  auto fail = [&](std::string_view what) {
    Status s = Errno(what, path);
    ::close(fd);
    return s;
  };
  // The generation after the one the file holds (if any).
  uint64_t generation = 1;
  char head[16];
  if (::pread(fd, head, sizeof head, 0) == static_cast<ssize_t>(sizeof head) &&
      Get<uint32_t>(head) == kFileMagic) {
    generation = Get<uint64_t>(head + 8) + 1;
  }
  // Allocated blocks: a store into the mapping can then not fail for want of
  // space (which would be a SIGBUS).
  int err = ::posix_fallocate(fd, 0, static_cast<off_t>(capacity));
  if (err != 0) {
    errno = err;
    return fail("cannot allocate the append journal");
  }
  void* map = ::mmap(nullptr, capacity, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return fail("cannot map the append journal");
  std::unique_ptr<AppendJournal> j(
      new AppendJournal(fd, static_cast<char*>(map), capacity, generation));
  std::memset(j->map_, 0, kHeaderBytes);
  uint32_t magic = kFileMagic, version = 1;
  std::memcpy(j->map_, &magic, 4);
  std::memcpy(j->map_ + 4, &version, 4);
  std::memcpy(j->map_ + 8, &generation, 8);
  j->TouchAhead();
  return j;
}

AppendJournal::~AppendJournal() {
  ::munmap(map_, capacity_);
  ::close(fd_);
}

void AppendJournal::TouchAhead() {
  // Rewriting a byte with its own value marks the page dirty (taking the
  // write fault of a clean page now, not in an append) and changes nothing.
  const uint64_t stop = std::min(capacity_, end_ + kAhead);
  for (uint64_t off = end_ / kPage * kPage; off < stop; off += kPage) {
    volatile char* p = map_ + off;
    *p = *p;
  }
}

Status AppendJournal::Append(const JournalRecord& r) {
  const std::string& body = *r.body;
  buf_.clear();
  Put<uint32_t>(&buf_, kMagic);
  Put<uint32_t>(&buf_, static_cast<uint32_t>(kFixed + r.run_id.size() + body.size()));
  Put<uint32_t>(&buf_, 0);  // crc, below
  Put<uint64_t>(&buf_, generation_);
  for (int64_t v : {r.run_pk, r.first_seq, r.count, r.first_pos, r.base_ts, r.max_ts, r.payload_bytes}) {
    Put<int64_t>(&buf_, v);
  }
  Put<uint32_t>(&buf_, static_cast<uint32_t>(r.run_id.size()));
  Put<uint32_t>(&buf_, static_cast<uint32_t>(body.size()));
  buf_ += r.run_id;
  buf_ += body;
  uint32_t crc = Crc32(buf_.data() + kHeader, buf_.size() - kHeader);
  std::memcpy(buf_.data() + 8, &crc, sizeof crc);
  if (end_ + buf_.size() > capacity_) return Status::Busy("the append journal is full");
  std::memcpy(map_ + end_, buf_.data(), buf_.size());
  end_ += buf_.size();
  return Status::Ok();
}

void AppendJournal::Reset() {
  ++generation_;
  std::memcpy(map_ + 8, &generation_, sizeof generation_);
  end_ = kHeaderBytes;
  TouchAhead();
}

void AppendJournal::Discard() {
  std::memset(map_, 0, kHeaderBytes);
  end_ = kHeaderBytes;
  (void)::ftruncate(fd_, 0);  // the mapping is not touched again
}

Status AppendJournal::ReadAll(const std::string& path, std::vector<JournalRecord>* records,
                              uint64_t* stopped_at) {
  records->clear();
  *stopped_at = 0;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::Ok();
    return Errno("cannot open the append journal", path);
  }
  std::string data;
  char chunk[65536];
  for (;;) {
    ssize_t n = ::read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      Status s = Errno("cannot read the append journal", path);
      ::close(fd);
      return s;
    }
    if (n == 0) break;
    data.append(chunk, static_cast<size_t>(n));
  }
  ::close(fd);
  if (data.size() < kHeaderBytes || Get<uint32_t>(data.data()) != kFileMagic) return Status::Ok();
  const uint64_t generation = Get<uint64_t>(data.data() + 8);
  size_t off = kHeaderBytes;
  while (data.size() - off >= kHeader) {
    const char* p = data.data() + off;
    uint32_t len = Get<uint32_t>(p + 4);
    if (Get<uint32_t>(p) != kMagic || len < kFixed || len > kMaxRecord ||
        data.size() - off - kHeader < len || Crc32(p + kHeader, len) != Get<uint32_t>(p + 8)) {
      break;
    }
    const char* q = p + kHeader;
    if (Get<uint64_t>(q) != generation) break;  // an earlier generation's
    q += 8;
    JournalRecord r;
    r.run_pk = Get<int64_t>(q);
    r.first_seq = Get<int64_t>(q + 8);
    r.count = Get<int64_t>(q + 16);
    r.first_pos = Get<int64_t>(q + 24);
    r.base_ts = Get<int64_t>(q + 32);
    r.max_ts = Get<int64_t>(q + 40);
    r.payload_bytes = Get<int64_t>(q + 48);
    uint32_t id_len = Get<uint32_t>(q + 56);
    uint32_t body_len = Get<uint32_t>(q + 60);
    if (static_cast<uint64_t>(id_len) + body_len != len - kFixed || r.count <= 0) break;
    r.run_id.assign(q + 64, id_len);
    r.body = std::make_shared<const std::string>(q + 64 + id_len, body_len);
    records->push_back(std::move(r));
    off += kHeader + len;
  }
  *stopped_at = off;
  return Status::Ok();
}

}  // namespace dispatch::internal
