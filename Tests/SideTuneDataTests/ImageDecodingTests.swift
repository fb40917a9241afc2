import Foundation
import SideTuneData
import SideTuneEngine
import SideTuneTestSupport
import Testing

/// Decoding and preprocessing against Pillow (goldens by scripts/make_image_goldens.py), and the
/// image-folder data set's rules.
@Suite struct ImageDecodingTests {
    static let goldens = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Goldens/images")

    struct Entry: Decodable { let height: Int, width: Int, channels: Int }
    static let manifest: [String: Entry] = {
        let data = try! Data(contentsOf: goldens.appendingPathComponent("manifest.json"))
        return try! JSONDecoder().decode([String: Entry].self, from: data)
    }()

    /// Every stored form decodes to Pillow's pixels: PNG exactly; JPEG (libjpeg-turbo in both, perhaps
    /// of other versions) within 1 level per sample. EXIF orientation is applied.
    @Test(arguments: manifest.keys.sorted())
    func decodesAsPillowDoes(name: String) throws {
        let path = Self.goldens.appendingPathComponent(name).path
        let image = try ImageDecoder.decode(file: path)
        let e = Self.manifest[name]!
        #expect(image.width == e.width && image.height == e.height && image.channels == e.channels,
                "\(name): \(image.width)x\(image.height)x\(image.channels), Pillow \(e.width)x\(e.height)x\(e.channels)")
        let reference = [UInt8](try Data(contentsOf: URL(fileURLWithPath: path + ".pixels")))
        guard image.pixels.count == reference.count else { return }
        let worst = zip(image.pixels, reference).map { abs(Int($0) - Int($1)) }.max()!
        #expect(worst <= (name.hasSuffix(".jpg") ? 1 : 0), "\(name): largest difference \(worst)")
    }

    /// The centre-crop pipeline (shorter side to 32, bicubic with antialias, centre 28 x 28, ImageNet
    /// normalisation) against Pillow's resize and crop: Pillow rounds to 8 bits after each pass, so
    /// values differ by up to about 1.5 levels (0.03 after normalisation).
    @Test(arguments: manifest.keys.sorted())
    func centreCropMatchesPillow(name: String) throws {
        let path = Self.goldens.appendingPathComponent(name).path
        let pixels = ImageInput(size: 28, pipeline: .centreCrop).pixels([try ImageDecoder.decode(file: path)])
        let reference = try Data(contentsOf: URL(fileURLWithPath: path + ".crop28")).withUnsafeBytes { Array($0.bindMemory(to: Float.self)) }
        let ours = pixels.toArray()
        #expect(ours.count == reference.count)
        let diffs = zip(ours, reference).map { abs($0 - $1) }
        let worst = diffs.max()!, mean = diffs.reduce(0, +) / Float(diffs.count)
        #expect(worst < 0.04 && mean < 0.008, "\(name): worst \(worst), mean \(mean)")
    }

    /// Bad files are errors naming the file and what is wrong.
    @Test func badImagesAreNamed() throws {
        let dir = scratchFolder("bad-images")
        let jpeg = try Data(contentsOf: Self.goldens.appendingPathComponent("rgb.jpg"))
        let png = try Data(contentsOf: Self.goldens.appendingPathComponent("rgb.png"))
        let cases: [(String, Data, String)] = [
            ("truncated.jpg", jpeg.prefix(jpeg.count / 2), "truncated.jpg"),
            ("truncated.png", png.prefix(png.count / 2), "PNG:"),
            ("empty.png", Data(), "empty file"),
            ("text.jpg", Data("hello".utf8), "not an image SideTune reads"),
            ("badcrc.png", { var d = png; d[40] ^= 0xFF; return d }(), "PNG:"),
        ]
        for (name, bytes, fragment) in cases {
            let url = dir.appendingPathComponent(name)
            try bytes.write(to: url)
            do {
                _ = try ImageDecoder.decode(file: url.path)
                // libjpeg decodes a cut-off JPEG with grey fill and a warning; that is tolerated.
                #expect(name == "truncated.jpg", "\(name) decoded")
            } catch {
                #expect("\(error)".contains(url.path) && "\(error)".contains(fragment), "\(name): \(error)")
            }
        }
        #expect(throws: DataError.self) { try ImageDecoder.decode(file: dir.appendingPathComponent("missing.png").path) }
    }

    /// Class folders in name order; hidden files and other extensions skipped; split folders found;
    /// an empty class folder, a folder of no classes, and a too-small image are errors naming them.
    @Test func imageFolders() throws {
        let root = scratchFolder("image-folder")
        let src = Self.goldens
        for (split, classes) in [("train", ["zebra", "ant"]), ("val", ["ant", "zebra", "moth"])] {
            for c in classes {
                let folder = root.appendingPathComponent("\(split)/\(c)")
                try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
                for name in ["rgb.jpg", "grey.png", "palette.png"] {
                    try FileManager.default.copyItem(at: src.appendingPathComponent(name), to: folder.appendingPathComponent(name))
                }
                try Data("notes".utf8).write(to: folder.appendingPathComponent("README.txt"))
                try Data().write(to: folder.appendingPathComponent(".DS_Store"))
            }
        }
        let folders = try #require(ImageFileList.splitFolders(of: root))
        #expect(folders.validation?.lastPathComponent == "val" && folders.test == nil)
        let train = try ImageFileList.folder(folders.train)
        #expect(train.classNames == ["ant", "zebra"] && train.paths.count == 6 && train.labels == [0, 0, 0, 1, 1, 1])
        let (val, dropped) = try ImageFileList.folder(folders.validation!).relabelled(to: train.classNames)
        #expect(val.paths.count == 6 && dropped == ["moth": 3])
        try train.check(minSide: 14)

        let empty = root.appendingPathComponent("train/empty")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        #expect { try ImageFileList.folder(folders.train) } throws: { "\($0)".contains("class folder 'empty' holds no images") }
        #expect { try ImageFileList.folder(root.appendingPathComponent("train/ant")) } throws: { "\($0)".contains("no class folders") }
        let tiny = root.appendingPathComponent("tiny.pgm")
        try Data(Array("P5 9 5 255\n".utf8) + [UInt8](repeating: 7, count: 45)).write(to: tiny)
        let list = ImageFileList(paths: [tiny.path], labels: [0], classNames: ["a"])
        #expect { try list.check(minSide: 14) } throws: { "\($0)".contains("9x5 pixels is smaller than the 14-pixel patch") }
    }
}
