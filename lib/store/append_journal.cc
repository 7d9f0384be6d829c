// AppendJournal (see append_journal.h). Record layout, little-endian as the
// host writes it (a journal never leaves the machine that wrote it):
//   u32 magic "DJR1" | u32 length of what follows the crc | u32 crc32 of it
//   i64 run_pk, first_seq, count, first_pos, base_ts, max_ts, payload_bytes
//   u32 run id length | u32 body length | run id | body
#include "store/append_journal.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstring>

namespace dispatch::internal {
namespace {

constexpr uint32_t kMagic = 0x31524A44;  // "DJR1"
constexpr size_t kHeader = 12;          // magic, length, crc
constexpr size_t kFixed = 7 * 8 + 2 * 4;
// A record holds one small append; anything larger is not a record of ours.
constexpr uint32_t kMaxRecord = 64u << 20;

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

Result<std::unique_ptr<AppendJournal>> AppendJournal::Open(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Errno("cannot open the append journal", path);
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    Status s = Errno("cannot stat the append journal", path);
    ::close(fd);
    return s;
  }
  return std::unique_ptr<AppendJournal>(new AppendJournal(fd, static_cast<uint64_t>(st.st_size)));
}

AppendJournal::~AppendJournal() { ::close(fd_); }

Status AppendJournal::Append(const JournalRecord& r) {
  const std::string& body = *r.body;
  buf_.clear();
  Put<uint32_t>(&buf_, kMagic);
  Put<uint32_t>(&buf_, static_cast<uint32_t>(kFixed + r.run_id.size() + body.size()));
  Put<uint32_t>(&buf_, 0);  // crc, below
  for (int64_t v : {r.run_pk, r.first_seq, r.count, r.first_pos, r.base_ts, r.max_ts, r.payload_bytes}) {
    Put<int64_t>(&buf_, v);
  }
  Put<uint32_t>(&buf_, static_cast<uint32_t>(r.run_id.size()));
  Put<uint32_t>(&buf_, static_cast<uint32_t>(body.size()));
  buf_ += r.run_id;
  buf_ += body;
  uint32_t crc = Crc32(buf_.data() + kHeader, buf_.size() - kHeader);
  std::memcpy(buf_.data() + 8, &crc, sizeof crc);
  size_t done = 0;
  while (done < buf_.size()) {
    ssize_t n = ::pwrite(fd_, buf_.data() + done, buf_.size() - done,
                         static_cast<off_t>(end_ + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return Status::IOError(fmt::format("append journal write: {}", std::strerror(errno)));
    done += static_cast<size_t>(n);
  }
  end_ += buf_.size();
  return Status::Ok();
}

Status AppendJournal::Reset() {
  if (end_ == 0) return Status::Ok();
  if (::ftruncate(fd_, 0) != 0) {
    return Status::IOError(fmt::format("append journal truncate: {}", std::strerror(errno)));
  }
  end_ = 0;
  return Status::Ok();
}

Status AppendJournal::ReadAll(const std::string& path, std::vector<JournalRecord>* records,
                              uint64_t* dropped_bytes) {
  records->clear();
  *dropped_bytes = 0;
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
  size_t off = 0;
  while (data.size() - off >= kHeader) {
    const char* p = data.data() + off;
    uint32_t len = Get<uint32_t>(p + 4);
    if (Get<uint32_t>(p) != kMagic || len < kFixed || len > kMaxRecord ||
        data.size() - off - kHeader < len || Crc32(p + kHeader, len) != Get<uint32_t>(p + 8)) {
      break;
    }
    const char* q = p + kHeader;
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
    r.run_id.assign(q + kFixed, id_len);
    r.body = std::make_shared<const std::string>(q + kFixed + id_len, body_len);
    records->push_back(std::move(r));
    off += kHeader + len;
  }
  *dropped_bytes = data.size() - off;
  return Status::Ok();
}

}  // namespace dispatch::internal
