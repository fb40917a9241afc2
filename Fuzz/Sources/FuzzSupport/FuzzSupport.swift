import CFuzzDriver
import Foundation

/// Helpers shared by the fuzz targets: a scratch folder per process (removed at exit) for the
/// loaders that only take paths, and the repository's tiny model fixtures.
public enum Fuzz {
    /// libFuzzer's driver on `testOneInput` (each target's entry point; see fuzz_driver.h).
    public static func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>,
                            _ testOneInput: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt) -> CInt {
        sidetune_fuzz_main(argc, argv, testOneInput)
    }

    /// Prints why each stage accepted or refused the input when SIDETUNE_FUZZ_VERBOSE is set (to
    /// check that seeds get as far as they should); thrown errors are otherwise just ignored.
    public static let verbose = getenv("SIDETUNE_FUZZ_VERBOSE") != nil

    /// `body`'s result, or nil when it throws.
    @discardableResult
    public static func attempt<T>(_ what: String, _ body: () throws -> T) -> T? {
        do {
            let value = try body()
            if verbose { print("\(what): ok") }
            return value
        } catch {
            if verbose { print("\(what): \(error)") }
            return nil
        }
    }

    /// `/tmp/sidetune-fuzz-<pid>`, created on first use.
    public static let scratch: URL = {
        let url = URL(fileURLWithPath: NSTemporaryDirectory()).appendingPathComponent("sidetune-fuzz-\(getpid())")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        atexit { try? FileManager.default.removeItem(at: Fuzz.scratch) }
        return url
    }()

    /// The repository's tiny model folders (Tests/SideTuneBackbonesTests/Goldens/tiny), found from
    /// this file's path at build time.
    public static let tinyModels: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Tests/SideTuneBackbonesTests/Goldens/tiny")

    /// A subfolder of the scratch folder, created on first use.
    public static func folder(_ name: String) -> URL {
        let url = scratch.appendingPathComponent(name)
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    /// A folder holding a symbolic link `model.safetensors` to a tiny fixture's weights, for the
    /// loaders that read config.json + model.safetensors (created once).
    public static func modelFolder(_ name: String, weightsOf fixture: String) -> URL {
        let url = folder(name)
        let link = url.appendingPathComponent("model.safetensors")
        if !FileManager.default.fileExists(atPath: link.path) {
            let target = tinyModels.appendingPathComponent(fixture).appendingPathComponent("model.safetensors")
            precondition(FileManager.default.fileExists(atPath: target.path), "fixture \(target.path) is missing")
            try? FileManager.default.createSymbolicLink(at: link, withDestinationURL: target)
        }
        return url
    }

    /// Writes the input to `url` (replacing it) and returns `url`.
    @discardableResult
    public static func write(_ data: UnsafePointer<UInt8>, _ size: Int, to url: URL) -> URL {
        let fd = open(url.path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        precondition(fd >= 0, "cannot write \(url.path)")
        var done = 0
        while done < size {
            let n = Foundation.write(fd, data + done, size - done)
            precondition(n > 0, "cannot write \(url.path)")
            done += n
        }
        close(fd)
        return url
    }

    /// The input as an array.
    public static func bytes(_ data: UnsafePointer<UInt8>, _ size: Int) -> [UInt8] {
        Array(UnsafeBufferPointer(start: data, count: size))
    }

    /// Text the tokenizers encode for every input: ASCII, accents, CJK, control characters,
    /// contractions, digits, and special-token spellings of both tokenizer families.
    public static let sentence = "Hello, World! naïve CAFÉ don't 12345 你好 \t\n\u{0}\u{7f} "
        + "[CLS] [SEP] [UNK] [MASK] ##ing "
        + "<|im_start|>user\nHi<|im_end|> <s></s> \u{200b}\u{301}e\u{1F600} 'll 've"
    public static let pair = "A second text, for pairs: WORLD world wor ##ld"
}
