// FileEditorAdapter: the "file" session kind (see dispatch/adapters/file.h).
//
// Each command names a path the user gave. It is first confined with
// util/path_confine (realpath + component comparison), then used only
// relative to a descriptor of the workspace opened at Start, through openat2
// with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS: the confined path has no
// symlinks left, so one that appears between the check and the use makes the
// open fail instead of leading outside. Renames and deletes act on the entry
// itself (a symlink is renamed or removed, never followed), inside a confined
// parent directory.
//
// Operations run on the loop thread and are synchronous (Command returns the
// reply); they touch one file each, so they are short, but a write fsyncs.
#include <dirent.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <nlohmann/json.hpp>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "adapters/file/file_util.h"
#include "dispatch/adapters/file.h"
#include "dispatch/ext/session_adapter.h"
#include "util/json_check.h"
#include "util/path_confine.h"
#include "util/text_codec.h"

namespace dispatch::internal::file {
namespace {

using nlohmann::json;

// An owned file descriptor.
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { Reset(); }
  Fd(Fd&& o) noexcept : fd_(std::exchange(o.fd_, -1)) {}
  Fd& operator=(Fd&& o) noexcept {
    Reset();
    fd_ = std::exchange(o.fd_, -1);
    return *this;
  }
  int get() const { return fd_; }
  bool ok() const { return fd_ >= 0; }
  void Reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

Status ErrnoStatus(int err, const std::string& what) {
  std::string m = what + ": " + std::strerror(err);
  switch (err) {
    case ENOENT:
      return Status::NotFound(m);
    case EEXIST:
    case ENOTEMPTY:
      return Status::Conflict(m, 0);
    case ELOOP:
    case EXDEV:
      return Status::InvalidArgument(what + ": refused, the path leads outside the workspace");
    case EISDIR:
    case ENOTDIR:
    case EINVAL:
    case ENAMETOOLONG:
      return Status::InvalidArgument(m);
    default:
      return Status::IOError(m);
  }
}

// openat2 beneath `dirfd`, refusing every symlink (the paths given here are
// canonical: they have none) and any escape. Falls back to O_NOFOLLOW on
// kernels without openat2.
int OpenBeneath(int dirfd, const std::string& rel, int flags, mode_t mode = 0) {
  const char* p = rel.empty() ? "." : rel.c_str();
  struct open_how how {};
  how.flags = static_cast<uint64_t>(flags | O_CLOEXEC);
  how.mode = (flags & O_CREAT) ? mode : 0;
  how.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd = ::syscall(SYS_openat2, dirfd, p, &how, sizeof how);
  if (fd < 0 && errno == ENOSYS) {
    fd = ::openat(dirfd, p, flags | O_CLOEXEC | O_NOFOLLOW, mode);
  }
  return static_cast<int>(fd);
}

std::pair<std::string, std::string> SplitLast(const std::string& rel) {
  size_t slash = rel.rfind('/');
  if (slash == std::string::npos) return {"", rel};
  return {rel.substr(0, slash), rel.substr(slash + 1)};
}

std::string RandomHex() {
  unsigned char b[8] = {};
  int fd = ::open("/dev/urandom", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    if (::read(fd, b, sizeof b) != static_cast<ssize_t>(sizeof b)) std::memset(b, 0, sizeof b);
    ::close(fd);
  }
  static uint64_t counter = 0;
  uint64_t v = ++counter;
  std::memcpy(b, &v, 2);  // distinct even if urandom failed
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned char c : b) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

Result<FileOptions> ParseOptions(std::string_view text) {
  FileOptions o;
  if (text.empty()) return o;
  json j = ParseJsonWithin(text);
  if (j.is_discarded() || !j.is_object()) {
    return Status::InvalidArgument("file options must be a JSON object");
  }
  for (const auto& [key, v] : j.items()) {
    if (key == "record_content" && v.is_boolean()) {
      o.record_content = v.get<bool>();
    } else if ((key == "max_record_bytes" || key == "max_file_bytes") && v.is_number_unsigned()) {
      size_t n = v.get<size_t>();
      if (key == "max_record_bytes") {
        if (n > kMaxPayloadBytes) {
          return Status::InvalidArgument("file option 'max_record_bytes' exceeds the event limit");
        }
        o.max_record_bytes = n;
      } else {
        o.max_file_bytes = n;
      }
    } else {
      return Status::InvalidArgument("unknown or malformed file option '" + key + "'");
    }
  }
  return o;
}

class FileEditorAdapter final : public SessionAdapter {
 public:
  explicit FileEditorAdapter(FileOptions options) : options_(options) {}

  Status Start(SessionContext& ctx) override {
    ctx_ = &ctx;
    auto root = CanonicalRoot(ctx.spec().workspace);
    if (!root.ok()) return root.status();
    root_ = *root;
    root_fd_ = Fd(::open(root_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!root_fd_.ok()) return ErrnoStatus(errno, "file: cannot open the workspace");
    return Status::Ok();
  }

  std::string Describe() const override { return json{{"root", root_}}.dump(); }

  Status Input(std::string_view, Encoding) override {
    return Status::InvalidArgument(
        "file sessions take commands (open, read, write, rename, delete, list, mkdir), not input");
  }

  Result<std::string> Command(const SessionCommand& command) override {
    const std::string& op = command.name;
    json args = ParseJsonWithin(command.payload);
    std::string path_for_error;
    Result<json> reply = Status::Internal("unreachable");
    if (!args.is_object()) {
      reply = Status::InvalidArgument("file " + op + ": the payload must be a JSON object");
    } else {
      if (auto it = args.find("path"); it != args.end() && it->is_string()) {
        path_for_error = it->get<std::string>();
      } else if (auto f = args.find("from"); f != args.end() && f->is_string()) {
        path_for_error = f->get<std::string>();
      }
      if (op == "open" || op == "read") {
        reply = DoRead(op, args);
      } else if (op == "close") {
        reply = DoClose(args);
      } else if (op == "write") {
        reply = DoWrite(args);
      } else if (op == "rename") {
        reply = DoRename(args);
      } else if (op == "delete") {
        reply = DoDelete(args);
      } else if (op == "list") {
        reply = DoList(args);
      } else if (op == "mkdir") {
        reply = DoMkdir(args);
      } else {
        return Status::InvalidArgument(
            "unknown command '" + op +
            "' for kind file (open, read, close, write, rename, delete, list, mkdir)");
      }
    }
    if (!reply.ok()) {
      const Status& s = reply.error();
      json e = {{"op", op},
                {"path", path_for_error},
                {"code", std::string(StatusCodeName(s.code()))},
                {"message", s.message()}};
      EmitJson("file:error", "error", e);
      return s;
    }
    return reply->dump(-1, ' ', false, json::error_handler_t::replace);
  }

  void Stop(bool) override {
    if (stopped_) return;
    stopped_ = true;
    root_fd_.Reset();
    ctx_->ReportExit(ExitInfo{});
  }

 private:
  // ---- paths ----

  Result<std::string> StringArg(const json& args, const char* key) {
    auto it = args.find(key);
    if (it == args.end() || !it->is_string()) {
      return Status::InvalidArgument(std::string("'") + key + "' must be a string");
    }
    return it->get<std::string>();
  }

  // The workspace-relative form of canonical `canon` ("" = the root).
  std::string Rel(const std::string& canon) const {
    if (canon.size() <= root_.size()) return "";
    return canon.substr(root_.size() + (root_ == "/" ? 0 : 1));
  }

  // An existing file or directory, symlinks resolved.
  Result<std::string> Existing(const std::string& path) {
    auto c = ConfineExisting(root_, path);
    if (!c.ok()) return c.status();
    return Rel(*c);
  }

  // A path to create or replace (its last component may not exist).
  Result<std::string> ToCreate(const std::string& path) {
    auto c = ConfineNew(root_, path);
    if (!c.ok()) return c.status();
    std::string rel = Rel(*c);
    if (rel.empty()) return Status::InvalidArgument("the workspace root itself cannot be written");
    return rel;
  }

  // A directory entry itself (not followed if it is a symlink): the parent
  // is confined, the last component must be a plain name.
  Result<std::string> Entry(std::string path) {
    if (path.find('\0') != std::string::npos) {
      return Status::InvalidArgument("path contains a NUL byte");
    }
    while (path.size() > 1 && path.back() == '/') path.pop_back();
    size_t slash = path.rfind('/');
    std::string dir = slash == std::string::npos ? "" : path.substr(0, slash);
    std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
    if (slash == 0) dir = "/";
    if (name.empty() || name == "." || name == "..") {
      return Status::InvalidArgument("path '" + path + "' does not name an entry inside the workspace");
    }
    auto parent = ConfineExisting(root_, dir);
    if (!parent.ok()) return parent.status();
    std::string rel = Rel(*parent);
    return rel.empty() ? name : rel + "/" + name;
  }

  Result<Fd> OpenDir(const std::string& rel) {
    Fd fd(OpenBeneath(root_fd_.get(), rel, O_RDONLY | O_DIRECTORY));
    if (!fd.ok()) return ErrnoStatus(errno, "directory '" + rel + "'");
    return fd;
  }

  // ---- operations ----

  Result<json> DoRead(const std::string& op, const json& args) {
    auto path = StringArg(args, "path");
    if (!path.ok()) return path.status();
    auto rel = Existing(*path);
    if (!rel.ok()) return rel.status();
    Fd fd(OpenBeneath(root_fd_.get(), *rel, O_RDONLY | O_NONBLOCK | O_NOCTTY));
    if (!fd.ok()) return ErrnoStatus(errno, "open '" + *rel + "'");
    struct stat st {};
    if (::fstat(fd.get(), &st) != 0) return ErrnoStatus(errno, "stat '" + *rel + "'");
    if (!S_ISREG(st.st_mode)) return Status::InvalidArgument("'" + *rel + "' is not a regular file");
    if (static_cast<uint64_t>(st.st_size) > options_.max_file_bytes) {
      return Status::InvalidArgument("'" + *rel + "' is larger than max_file_bytes");
    }
    std::string data;
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return ErrnoStatus(errno, "read '" + *rel + "'");
      if (n == 0) break;
      data.append(buf, static_cast<size_t>(n));
      if (data.size() > options_.max_file_bytes) {
        return Status::InvalidArgument("'" + *rel + "' is larger than max_file_bytes");
      }
    }
    std::string hash = Sha256Hex(data);
    json meta = {{"path", *rel}, {"size", data.size()}, {"sha256", hash}};
    if (op == "open") {
      open_.insert(*rel);
      EmitJson("file:opened", "opened", meta);
      MaybeRecordContent("opened", data);
    } else {
      EmitJson("file:read", "read", meta);
    }
    json reply = meta;
    if (IsValidUtf8(data)) {
      reply["encoding"] = "text";
      reply["content"] = std::move(data);
    } else {
      reply["encoding"] = "base64";
      reply["content"] = Base64Encode(data);
    }
    return reply;
  }

  Result<json> DoClose(const json& args) {
    auto path = StringArg(args, "path");
    if (!path.ok()) return path.status();
    auto rel = Existing(*path);
    std::string key = rel.ok() ? *rel : *path;
    if (open_.erase(key) == 0) return Status::NotFound("'" + *path + "' is not open");
    json meta = {{"path", key}};
    EmitJson("file:closed", "closed", meta);
    return meta;
  }

  Result<json> DoWrite(const json& args) {
    auto path = StringArg(args, "path");
    if (!path.ok()) return path.status();
    std::string data;
    if (auto it = args.find("content"); it != args.end() && it->is_string()) {
      data = it->get<std::string>();
    } else if (auto b = args.find("content_base64"); b != args.end() && b->is_string()) {
      auto decoded = Base64Decode(b->get<std::string>());
      if (!decoded) return Status::InvalidArgument("'content_base64' is not base64");
      data = std::move(*decoded);
    } else {
      return Status::InvalidArgument("write needs 'content' (text) or 'content_base64'");
    }
    if (data.size() > options_.max_file_bytes) {
      return Status::InvalidArgument("content is larger than max_file_bytes");
    }
    bool create_dirs = args.value("create_dirs", false);
    std::optional<std::string> expected;
    if (auto e = args.find("expected_sha256"); e != args.end() && e->is_string()) {
      expected = e->get<std::string>();
    }

    auto rel = ToCreate(*path);
    if (!rel.ok()) return rel.status();
    auto [dir, name] = SplitLast(*rel);
    if (create_dirs && !dir.empty()) {
      Status s = MakeDirs(dir);
      if (!s.ok()) return s;
    }
    auto dirfd = OpenDir(dir);
    if (!dirfd.ok()) return dirfd.status();
    int dfd = dirfd->get();

    struct stat st {};
    bool exists = ::fstatat(dfd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0;
    if (exists && S_ISLNK(st.st_mode)) {
      return Status::InvalidArgument("'" + *rel + "' changed into a symlink; refused");
    }
    if (exists && !S_ISREG(st.st_mode)) {
      return Status::InvalidArgument("'" + *rel + "' is not a regular file");
    }
    if (expected) {
      std::string current = "";
      if (exists) {
        Fd cur(OpenBeneath(root_fd_.get(), *rel, O_RDONLY | O_NONBLOCK));
        if (!cur.ok()) return ErrnoStatus(errno, "open '" + *rel + "'");
        Sha256 h;
        char buf[65536];
        ssize_t n;
        while ((n = ::read(cur.get(), buf, sizeof buf)) > 0) h.Update({buf, static_cast<size_t>(n)});
        if (n < 0) return ErrnoStatus(errno, "read '" + *rel + "'");
        current = h.HexDigest();
      }
      if (current != *expected) {
        return Status::Conflict("'" + *rel + "' changed: its sha256 is " +
                                    (exists ? current : std::string("(missing)")) +
                                    ", expected " + *expected,
                                0);
      }
    }

    // Atomic replace: temp file in the same directory, fsync, rename, fsync dir.
    std::string tmp = "." + name.substr(0, 64) + ".dispatch-" + RandomHex() + ".tmp";
    mode_t mode = exists ? (st.st_mode & 07777) : 0644;
    Fd out(::openat(dfd, tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode));
    if (!out.ok()) return ErrnoStatus(errno, "create a temporary file next to '" + *rel + "'");
    auto fail = [&](int err, const std::string& what) {
      ::unlinkat(dfd, tmp.c_str(), 0);
      return ErrnoStatus(err, what);
    };
    size_t off = 0;
    while (off < data.size()) {
      ssize_t n = ::write(out.get(), data.data() + off, data.size() - off);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return fail(errno, "write '" + *rel + "'");
      off += static_cast<size_t>(n);
    }
    if (exists && ::fchmod(out.get(), mode) != 0) return fail(errno, "chmod '" + *rel + "'");
    if (::fsync(out.get()) != 0) return fail(errno, "fsync '" + *rel + "'");
    out.Reset();
    if (::renameat(dfd, tmp.c_str(), dfd, name.c_str()) != 0) {
      return fail(errno, "rename into '" + *rel + "'");
    }
    ::fsync(dfd);

    std::string hash = Sha256Hex(data);
    json meta = {{"path", *rel}, {"size", data.size()}, {"sha256", hash}, {"created", !exists}};
    MaybeRecordContent("saved", data);
    EmitJson("file:saved", "saved", meta);
    return meta;
  }

  Status MakeDirs(const std::string& dir) {
    std::string so_far;
    size_t i = 0;
    while (i <= dir.size()) {
      size_t j = dir.find('/', i);
      if (j == std::string::npos) j = dir.size();
      std::string comp = dir.substr(i, j - i);
      i = j + 1;
      if (comp.empty()) continue;
      auto parent = OpenDir(so_far);
      if (!parent.ok()) return parent.status();
      if (::mkdirat(parent->get(), comp.c_str(), 0755) != 0 && errno != EEXIST) {
        return ErrnoStatus(errno, "mkdir '" + comp + "'");
      }
      so_far = so_far.empty() ? comp : so_far + "/" + comp;
    }
    // The result must be a real directory beneath the root (no symlink).
    auto check = OpenDir(so_far);
    return check.ok() ? Status::Ok() : check.status();
  }

  Result<json> DoMkdir(const json& args) {
    auto path = StringArg(args, "path");
    if (!path.ok()) return path.status();
    auto rel = ToCreate(*path);
    if (!rel.ok()) return rel.status();
    if (args.value("parents", false)) {
      Status s = MakeDirs(*rel);
      if (!s.ok()) return s;
    } else {
      auto [dir, name] = SplitLast(*rel);
      auto dirfd = OpenDir(dir);
      if (!dirfd.ok()) return dirfd.status();
      if (::mkdirat(dirfd->get(), name.c_str(), 0755) != 0) {
        return ErrnoStatus(errno, "mkdir '" + *rel + "'");
      }
    }
    json meta = {{"path", *rel}};
    EmitJson("file:dir_created", "dir_created", meta);
    return meta;
  }

  Result<json> DoRename(const json& args) {
    auto from = StringArg(args, "from");
    if (!from.ok()) return from.status();
    auto to = StringArg(args, "to");
    if (!to.ok()) return to.status();
    auto from_rel = Entry(*from);
    if (!from_rel.ok()) return from_rel.status();
    auto to_rel = Entry(*to);
    if (!to_rel.ok()) return to_rel.status();
    bool overwrite = args.value("overwrite", false);
    auto [fdir, fname] = SplitLast(*from_rel);
    auto [tdir, tname] = SplitLast(*to_rel);
    auto fdirfd = OpenDir(fdir);
    if (!fdirfd.ok()) return fdirfd.status();
    auto tdirfd = OpenDir(tdir);
    if (!tdirfd.ok()) return tdirfd.status();
    unsigned flags = overwrite ? 0 : RENAME_NOREPLACE;
    if (::renameat2(fdirfd->get(), fname.c_str(), tdirfd->get(), tname.c_str(), flags) != 0) {
      int err = errno;
      if (err == EEXIST) {
        return Status::Conflict("'" + *to_rel + "' exists (pass overwrite: true to replace it)", 0);
      }
      return ErrnoStatus(err, "rename '" + *from_rel + "' to '" + *to_rel + "'");
    }
    ::fsync(fdirfd->get());
    if (tdir != fdir) ::fsync(tdirfd->get());
    if (open_.erase(*from_rel) > 0) open_.insert(*to_rel);
    json meta = {{"from", *from_rel}, {"to", *to_rel}};
    EmitJson("file:renamed", "renamed", meta);
    return meta;
  }

  Result<json> DoDelete(const json& args) {
    auto path = StringArg(args, "path");
    if (!path.ok()) return path.status();
    auto rel = Entry(*path);
    if (!rel.ok()) return rel.status();
    auto [dir, name] = SplitLast(*rel);
    auto dirfd = OpenDir(dir);
    if (!dirfd.ok()) return dirfd.status();
    struct stat st {};
    if (::fstatat(dirfd->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
      return ErrnoStatus(errno, "delete '" + *rel + "'");
    }
    bool is_dir = S_ISDIR(st.st_mode);
    if (::unlinkat(dirfd->get(), name.c_str(), is_dir ? AT_REMOVEDIR : 0) != 0) {
      return ErrnoStatus(errno, "delete '" + *rel + "'");
    }
    ::fsync(dirfd->get());
    open_.erase(*rel);
    json meta = {{"path", *rel},
                 {"type", is_dir ? "dir" : S_ISLNK(st.st_mode) ? "symlink" : "file"}};
    EmitJson("file:deleted", "deleted", meta);
    return meta;
  }

  Result<json> DoList(const json& args) {
    std::string path;
    if (auto it = args.find("path"); it != args.end()) {
      if (!it->is_string()) return Status::InvalidArgument("'path' must be a string");
      path = it->get<std::string>();
    }
    auto rel = Existing(path);
    if (!rel.ok()) return rel.status();
    auto dirfd = OpenDir(*rel);
    if (!dirfd.ok()) return dirfd.status();
    int dup = ::dup(dirfd->get());
    if (dup < 0) return ErrnoStatus(errno, "list '" + *rel + "'");
    std::unique_ptr<DIR, int (*)(DIR*)> dir(::fdopendir(dup), ::closedir);
    if (!dir) {
      ::close(dup);
      return ErrnoStatus(errno, "list '" + *rel + "'");
    }
    constexpr size_t kMaxEntries = 100000;
    json entries = json::array();
    bool truncated = false;
    std::vector<std::pair<std::string, json>> items;
    while (struct dirent* d = ::readdir(dir.get())) {
      std::string name = d->d_name;
      if (name == "." || name == "..") continue;
      if (items.size() == kMaxEntries) {
        truncated = true;
        break;
      }
      struct stat st {};
      json e = {{"name", name}};
      if (::fstatat(dirfd->get(), name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
        e["type"] = S_ISDIR(st.st_mode)   ? "dir"
                    : S_ISREG(st.st_mode) ? "file"
                    : S_ISLNK(st.st_mode) ? "symlink"
                                          : "other";
        e["size"] = static_cast<int64_t>(st.st_size);
        e["mtimeMs"] = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000 + st.st_mtim.tv_nsec / 1000000;
      }
      items.emplace_back(name, std::move(e));
    }
    std::sort(items.begin(), items.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    for (auto& [n, e] : items) entries.push_back(std::move(e));
    json meta = {{"path", *rel}, {"count", entries.size()}};
    if (truncated) meta["truncated"] = true;
    EmitJson("file:listed", "listed", meta);
    json reply = meta;
    reply["entries"] = std::move(entries);
    return reply;
  }

  // ---- events ----

  void MaybeRecordContent(const char* type, const std::string& data) {
    if (!options_.record_content || data.size() > options_.max_record_bytes) return;
    NewEvent e;
    e.channel = "file:content";
    e.type = type;
    e.payload = data;
    e.encoding = Encoding::kBytes;
    (void)ctx_->Emit(std::move(e));
  }

  void EmitJson(const char* channel, const char* type, const json& payload) {
    if (ctx_ == nullptr) return;
    NewEvent e;
    e.channel = channel;
    e.type = type;
    e.payload = payload.dump(-1, ' ', false, json::error_handler_t::replace);
    e.encoding = Encoding::kJson;
    (void)ctx_->Emit(std::move(e));
  }

  FileOptions options_;
  SessionContext* ctx_ = nullptr;
  std::string root_;
  Fd root_fd_;
  std::set<std::string> open_;
  bool stopped_ = false;
};

}  // namespace
}  // namespace dispatch::internal::file

namespace dispatch {

AdapterFactory FileAdapterFactory() {
  return [](const SessionSpec& spec) -> Result<std::unique_ptr<SessionAdapter>> {
    auto options = internal::file::ParseOptions(spec.options_json);
    if (!options.ok()) return options.status();
    return std::unique_ptr<SessionAdapter>(new internal::file::FileEditorAdapter(*options));
  };
}

}  // namespace dispatch
