import Foundation
import Testing
import SideTuneData
import SideTuneEngine
import SideTuneTestSupport

/// gzip.compress(bytes([0,0,8,1, 0,0,0,3, 1,2,3]), mtime=0) from Python: an IDX label file.
let gzLabels: [UInt8] = [31, 139, 8, 0, 0, 0, 0, 0, 2, 3, 99, 96, 224, 96, 100, 96, 96, 96, 102, 100, 98, 6, 0,
                         139, 229, 189, 164, 11, 0, 0, 0]

func tempFile(_ name: String, _ bytes: [UInt8]) throws -> String {
    let dir = scratchFolder("img")
    let path = dir.appendingPathComponent(name).path
    try Data(bytes).write(to: URL(fileURLWithPath: path))
    return path
}

func expectDataError(_ contains: [String], sourceLocation: SourceLocation = #_sourceLocation, _ body: () throws -> Void) {
    do {
        try body()
        Issue.record("expected a DataError", sourceLocation: sourceLocation)
    } catch let e as DataError {
        for s in contains { #expect(e.description.contains(s), "'\(s)' not in: \(e)", sourceLocation: sourceLocation) }
    } catch {
        Issue.record("expected DataError, got \(error)", sourceLocation: sourceLocation)
    }
}

/// IDX bytes: magic 00 00 08 rank, big-endian dims, data.
func idx(_ dims: [Int], _ data: [UInt8]) -> [UInt8] {
    [0, 0, 8, UInt8(dims.count)] + dims.flatMap { d in [24, 16, 8, 0].map { UInt8((d >> $0) & 0xff) } } + data
}

@Suite struct GzipAndIDXTests {
    @Test func gzipRoundTripFromPython() throws {
        #expect(Gzip.isGzip(gzLabels))
        #expect(try Gzip.decompress(gzLabels) == [0, 0, 8, 1, 0, 0, 0, 3, 1, 2, 3])
    }

    @Test func truncatedGzip() {
        for cut in [5, 12, 20, 27] {
            expectDataError(["gzip"]) { _ = try Gzip.decompress(Array(gzLabels[0..<cut]), file: "x.gz") }
        }
    }

    @Test func corruptGzipFailsItsChecksum() {
        var bad = gzLabels
        bad[23] ^= 0xff // CRC-32 byte
        expectDataError(["gzip", "corrupt"]) { _ = try Gzip.decompress(bad, file: "x.gz") }
    }

    @Test func imagesAndLabelsPlainAndGzip() throws {
        let images = try tempFile("i.idx", idx([3, 2, 2], Array(0..<12)))
        let labels = try tempFile("l.gz", gzLabels)
        let set = try IDX.load(images: images, labels: labels)
        #expect(set.count == 3 && set.height == 2 && set.width == 2)
        #expect(set.labels == [1, 2, 3])
        #expect(Array(set.image(2)) == [8, 9, 10, 11])
    }

    @Test func idxErrors() throws {
        expectDataError(["bad magic"]) { _ = try IDX.parse([1, 0, 8, 1, 0, 0, 0, 0], file: "f") }
        expectDataError(["element type 0x0d"]) { _ = try IDX.parse([0, 0, 0x0d, 1, 0, 0, 0, 0], file: "f") }
        expectDataError(["rank 1, expected 3"]) { _ = try IDX.parse(idx([2], [1, 2]), file: "f", expectRank: 3) }
        expectDataError(["truncated header"]) { _ = try IDX.parse([0, 0, 8, 3, 0, 0], file: "f") }
        expectDataError(["truncated data", "need 12", "has 11"]) { _ = try IDX.parse(idx([3, 2, 2], Array(0..<11)), file: "f") }
        expectDataError(["1 unexpected bytes"]) { _ = try IDX.parse(idx([3], [1, 2, 3, 4]), file: "f") }
        let images = try tempFile("i.idx", idx([2, 2, 2], Array(0..<8)))
        let labels = try tempFile("l.gz", gzLabels)
        expectDataError(["3 labels for 2 images"]) { _ = try IDX.load(images: images, labels: labels) }
    }

    /// Found by Fuzz/fuzz-idx: dimensions whose product overflows Int trapped; now an error.
    @Test func idxDimensionsOverflowingInt() {
        let header: [UInt8] = [0, 0, 8, 3] + [UInt8](repeating: 0xff, count: 12) // 3 dims of 2^32 - 1
        expectDataError(["dims [4294967295, 4294967295]", "need more than"]) { _ = try IDX.parse(header, file: "f") }
    }

    /// Found by Fuzz/fuzz-idx: zero images of 2^32 - 1 x 2^32 - 1 pixels (no bytes at all) loaded,
    /// then the set's image size overflowed Int.
    @Test func idxImagesOfImpossibleSize() throws {
        let images = try tempFile("huge.idx", idx([0, 0xffff_ffff, 0xffff_ffff], []))
        let labels = try tempFile("none.idx", idx([0], []))
        expectDataError(["images of 4294967295x4294967295 pixels"]) { _ = try IDX.load(images: images, labels: labels) }
    }
}

@Suite struct NPYAndCSVTests {
    func npy(_ header: String, _ body: [UInt8], version: UInt8 = 1) -> [UInt8] {
        var h = Array(header.utf8)
        let pre = version == 1 ? 10 : 12
        while (pre + h.count + 1) % 64 != 0 { h.append(0x20) }
        h.append(0x0a)
        let len = version == 1 ? [UInt8(h.count & 0xff), UInt8(h.count >> 8)] : [UInt8(h.count & 0xff), UInt8(h.count >> 8), 0, 0]
        return [0x93] + Array("NUMPY".utf8) + [version, 0] + len + h + body
    }

    @Test func float32AndUInt8() throws {
        let f: [Float] = [1, -2.5, 3, 0.125, 5, 6]
        let b = f.flatMap { withUnsafeBytes(of: $0.bitPattern.littleEndian) { Array($0) } }
        let (s, v) = try NPY.parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", b), file: "a.npy")
        #expect(s == [2, 3] && v == .float32(f))
        let (s2, v2) = try NPY.parse(npy("{'descr': '|u1', 'fortran_order': False, 'shape': (4,), }", [1, 2, 3, 255], version: 2), file: "b.npy")
        #expect(s2 == [4] && v2 == .uint8([1, 2, 3, 255]) && v2.floats == [1, 2, 3, 255])
    }

    /// Found with Fuzz/fuzz-image: a shape whose element count overflows Int trapped.
    @Test func npyShapeOverflowingInt() {
        let header = "{'descr': '|u1', 'fortran_order': False, 'shape': (4294967296, 4294967296, 1), }"
        expectDataError(["holds more than"]) { _ = try NPY.parse(npy(header, [0, 0, 0, 0]), file: "x") }
        let floats = "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904,), }"
        expectDataError(["needs more than 9223372036854775807 bytes"]) { _ = try NPY.parse(npy(floats, [0, 0, 0, 0]), file: "x") }
    }

    @Test func npyErrors() {
        expectDataError(["magic"]) { _ = try NPY.parse(Array("NOTNUMPYAAAA".utf8), file: "x") }
        expectDataError(["Fortran"]) { _ = try NPY.parse(npy("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", [0, 0, 0, 0]), file: "x") }
        expectDataError(["'<f8'"]) { _ = try NPY.parse(npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", [UInt8](repeating: 0, count: 8)), file: "x") }
        expectDataError(["needs 24 bytes", "has 20"]) {
            _ = try NPY.parse(npy("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", [UInt8](repeating: 0, count: 20)), file: "x")
        }
    }

    @Test func csvRows() throws {
        let set = try CSVImages.parse("label,p1,p2,p3,p4\n3,0,10,20,255\r\n7,1,2,3,4\n\n", file: "c.csv", height: 2, width: 2)
        #expect(set.labels == [3, 7] && set.pixels == [0, 10, 20, 255, 1, 2, 3, 4])
        expectDataError(["c.csv:2", "found 4 fields"]) { _ = try CSVImages.parse("l,a,b,c,d\n1,2,3,4\n", file: "c.csv", height: 2, width: 2) }
        expectDataError(["c.csv:1:3", "'256'"]) { _ = try CSVImages.parse("1,2,256,4,5\n", file: "c.csv", height: 2, width: 2) }
        expectDataError(["label 'x'"]) { _ = try CSVImages.parse("1,2,3,4,5\nx,2,3,4,5\n", file: "c.csv", height: 2, width: 2) }
    }
}

@Suite struct PreprocessingTests {
    @Test func bilinearUpsampleMatchesTorch() {
        // torch F.interpolate([[0,1],[2,3]], size=4, mode="bilinear", align_corners=False)
        let img = FloatImage(channels: 1, height: 2, width: 2, values: [0, 1, 2, 3]).resized(height: 4, width: 4)
        let expected: [Float] = [0, 0.25, 0.75, 1, 0.5, 0.75, 1.25, 1.5, 1.5, 1.75, 2.25, 2.5, 2, 2.25, 2.75, 3]
        #expect(zip(img.values, expected).allSatisfy { abs($0 - $1) < 1e-6 })
    }

    @Test func bicubicKeepsConstantsAndIdentity() {
        let c = FloatImage(channels: 2, height: 5, width: 7, values: [Float](repeating: 0.3, count: 70))
        #expect(c.resized(height: 11, width: 3, filter: .bicubic).values.allSatisfy { abs($0 - 0.3) < 1e-6 })
        var rng = SplitMix64(seed: 1)
        let r = FloatImage(channels: 1, height: 4, width: 4, values: (0..<16).map { _ in rng.nextFloat() })
        #expect(r.resized(height: 4, width: 4, filter: .bicubic) == r)
        // Bicubic overshoots at edges where bilinear cannot: a step 0 -> 1 upsampled.
        let step = FloatImage(channels: 1, height: 1, width: 4, values: [0, 0, 1, 1]).resized(height: 1, width: 8, filter: .bicubic)
        #expect(step.values.min()! < 0 && step.values.max()! > 1)
    }

    @Test func greyToRGBNormalised() {
        let set = ImageSet(pixels: [0, 255, 51, 102], labels: [0], height: 2, width: 2)
        let p = ImagePreprocessor(size: 2)
        let img = p.image(set, 0)
        #expect(img.channels == 3)
        for c in 0..<3 {
            let m = ImagePreprocessor.imageNetMean[c], s = ImagePreprocessor.imageNetStd[c]
            #expect(abs(img.values[c * 4 + 1] - (1 - m) / s) < 1e-6)
            #expect(abs(img.values[c * 4 + 2] - (0.2 - m) / s) < 1e-6)
        }
        let batch = p.batch(set, [0, 0])
        #expect(batch.shape == [2, 3, 2, 2] && Array(batch.toArray()[12..<24]) == img.values)
    }

    @Test func flipAndCrop() {
        let img = FloatImage(channels: 1, height: 2, width: 3, values: [1, 2, 3, 4, 5, 6])
        #expect(img.flippedHorizontally().values == [3, 2, 1, 6, 5, 4])
        #expect(img.cropped(top: 0, left: 0, height: 2, width: 3, padding: 1).values == [0, 0, 0, 0, 1, 2])
        #expect(img.cropped(top: 1, left: 1, height: 2, width: 3, padding: 1).values == img.values)
    }

    @Test func augmentationIsSeededPerImage() {
        var rng = SplitMix64(seed: 5)
        let set = ImageSet(pixels: (0..<(8 * 64)).map { _ in UInt8(rng.nextInt(below: 256)) }, labels: [Int32](repeating: 0, count: 8),
                           height: 8, width: 8)
        let p = ImagePreprocessor(size: 8, flip: true, cropPadding: 2)
        #expect(p.image(set, 3, augmentSeed: 9) == p.image(set, 3, augmentSeed: 9))
        let plain = p.image(set, 3)
        let variants = Set((0..<16).map { s in p.image(set, 3, augmentSeed: UInt64(s)).values.map { $0.bitPattern } })
        #expect(variants.count > 8)
        #expect(!variants.contains(plain.values.map { $0.bitPattern }) || variants.count > 1)
    }
}

@Suite struct FashionMNISTTests {
    func synthetic(perClass: Int) -> ImageSet {
        let labels = (0..<(10 * perClass)).map { Int32($0 % 10) }
        return ImageSet(pixels: [UInt8](repeating: 0, count: labels.count), labels: labels, height: 1, width: 1)
    }

    @Test func fewShotSplitIsStratifiedDisjointAndSeeded() throws {
        let set = synthetic(perClass: 150)
        let (tr, va) = try FashionMNIST.fewShotSplit(set, seed: 7)
        #expect(tr.count == 800 && va.count == 200)
        #expect(Set(tr).isDisjoint(with: va))
        for c in 0..<10 {
            #expect(tr.filter { set.labels[$0] == c }.count == 80)
            #expect(va.filter { set.labels[$0] == c }.count == 20)
        }
        #expect(tr == tr.sorted())
        let again = try FashionMNIST.fewShotSplit(set, seed: 7)
        #expect(again.train == tr && again.validation == va)
        #expect(try FashionMNIST.fewShotSplit(set, seed: 8).train != tr)
        expectDataError(["class 0 has 50 images, 100 needed"]) { _ = try FashionMNIST.fewShotSplit(synthetic(perClass: 50)) }
    }

    /// The real Debian files (set SIDETUNE_FASHION_DIR to usr/share/datasets/fashion-mnist).
    @Test(.enabled(if: ProcessInfo.processInfo.environment["SIDETUNE_FASHION_DIR"] != nil))
    func realFiles() throws {
        let (train, test) = try FashionMNIST.load(directory: ProcessInfo.processInfo.environment["SIDETUNE_FASHION_DIR"]!)
        #expect(train.count == 60_000 && test.count == 10_000)
        #expect(train.height == 28 && train.width == 28)
        #expect(train.indicesByClass(classes: 10).map(\.count) == [Int](repeating: 6000, count: 10))
        #expect(test.indicesByClass(classes: 10).map(\.count) == [Int](repeating: 1000, count: 10))
        #expect(Array(test.labels.prefix(5)) == [9, 2, 1, 1, 6])  // ankle boot, pullover, trouser, trouser, shirt
        #expect(Array(train.labels.prefix(5)) == [9, 0, 0, 3, 0])
        let (tr, va) = try FashionMNIST.fewShotSplit(train, seed: 0)
        #expect(tr.count == 800 && va.count == 200 && Set(tr).isDisjoint(with: va))
        let few = try FashionMNIST.fewShot(directory: ProcessInfo.processInfo.environment["SIDETUNE_FASHION_DIR"]!, seed: 0)
        #expect(few.train.count == 800 && few.validation.count == 200 && few.test.count == 10_000)
        #expect(few.train.indicesByClass(classes: 10).map(\.count) == [Int](repeating: 80, count: 10))
        #expect(few.validation.indicesByClass(classes: 10).map(\.count) == [Int](repeating: 20, count: 10))
        #expect(Array(few.train.image(0)) == Array(train.image(tr[0])) && few.train.labels[5] == train.labels[tr[5]])
    }
}

/// NPY v1 bytes of a uint8 array.
func npyBytes(_ shape: [Int], _ data: [UInt8]) -> [UInt8] {
    var header = "{'descr': '|u1', 'fortran_order': False, 'shape': (\(shape.map(String.init).joined(separator: ", "))\(shape.count == 1 ? "," : "")), }"
    while (10 + header.utf8.count + 1) % 64 != 0 { header += " " }
    header += "\n"
    let n = header.utf8.count
    return [0x93] + Array("NUMPY".utf8) + [1, 0, UInt8(n & 0xff), UInt8(n >> 8)] + Array(header.utf8) + data
}

@Suite struct ImageFileTests {
    @Test func binaryAndPlainGreyMaps() throws {
        // P5 with a comment, maxval 255: bytes as they are.
        let p5 = try ImageFile.load(tempFile("a.pgm", Array("P5\n# made by hand\n3 2\n255\n".utf8) + [0, 10, 20, 30, 40, 255]))
        #expect(p5.height == 2 && p5.width == 3 && p5.channels == 1 && p5.pixels == [0, 10, 20, 30, 40, 255] && p5.labels == [-1])
        // P2 with maxval 15: scaled to 0-255 (15 -> 255, 1 -> 17).
        let p2 = try ImageFile.load(tempFile("b.pgm", Array("P2 2 1 15\n1 15\n".utf8)))
        #expect(p2.pixels == [17, 255])
        // 16-bit binary samples are big-endian.
        let p16 = try Netpbm.parse(Array("P5 1 1 65535 ".utf8) + [0xff, 0xff], file: "x")
        #expect(p16.pixels == [255])
    }

    @Test func colourMapsKeepThreeChannels() throws {
        let p6 = try ImageFile.load(tempFile("c.ppm", Array("P6 1 2 255\n".utf8) + [1, 2, 3, 4, 5, 6]))
        #expect(p6.channels == 3 && p6.height == 2 && p6.width == 1 && p6.pixels == [1, 2, 3, 4, 5, 6])
        let p3 = try ImageFile.load(tempFile("d.ppm", Array("P3 1 1 255 7 8 9".utf8)))
        #expect(p3.channels == 3 && p3.pixels == [7, 8, 9])
    }

    @Test func npyImages() throws {
        let one = try ImageFile.load(tempFile("one.npy", npyBytes([2, 3], [1, 2, 3, 4, 5, 6])))
        #expect(one.count == 1 && one.height == 2 && one.width == 3 && one.channels == 1)
        let rgb = try ImageFile.load(tempFile("rgb.npy", npyBytes([1, 2, 3], [1, 2, 3, 4, 5, 6])))
        #expect(rgb.count == 1 && rgb.channels == 3 && rgb.width == 2)
        let many = try ImageFile.load(tempFile("many.npy", npyBytes([2, 2, 2], Array(0..<8))))
        #expect(many.count == 2 && many.height == 2 && Array(many.image(1)) == [4, 5, 6, 7])
    }

    @Test func badImageFilesAreClearErrors() throws {
        expectDataError(["truncated pixels", "needs 6 bytes"]) { _ = try ImageFile.load(tempFile("t.pgm", Array("P5 3 2 255\n".utf8) + [1, 2])) }
        expectDataError(["P2, P3, P5, P6"]) { _ = try ImageFile.load(tempFile("bits.pbm.pgm", Array("P4 1 1\n".utf8) + [0])) }
        expectDataError(["sample 16 above maxval 15"]) { _ = try ImageFile.load(tempFile("m.pgm", Array("P2 1 1 15 16".utf8))) }
        expectDataError(["width '0'"]) { _ = try ImageFile.load(tempFile("z.pgm", Array("P5 0 1 255\n".utf8))) }
        expectDataError(["convert to PGM or PPM"]) { _ = try ImageFile.load(tempFile("x.png", [0x89, 0x50])) }
        expectDataError(["'.gif' is not an image format"]) { _ = try ImageFile.load(tempFile("x.gif", [0])) }
        expectDataError(["no such image file"]) { _ = try ImageFile.load("/nonexistent/some text") }
        expectDataError(["not [H, W]"]) { _ = try ImageFile.load(tempFile("v.npy", npyBytes([4], [1, 2, 3, 4]))) }
    }

    /// Found with Fuzz/fuzz-image: a 19-byte header claiming 32768 x 32768 x 3 samples reserved
    /// 3 GB before the pixels were found missing (over libFuzzer's 2 GB malloc limit).
    @Test func netpbmHeaderClaimingGigabytes() {
        expectDataError(["truncated pixels", "needs 3221225472 bytes, file has 3"]) {
            _ = try Netpbm.parse(Array("P6 32768 32768 255\n".utf8) + [0, 0, 0], file: "huge.ppm")
        }
    }
}
