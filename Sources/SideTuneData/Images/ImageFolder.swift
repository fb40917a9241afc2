import Foundation
import SideTuneEngine

/// Labelled image files, as people keep image data: an image folder (torchvision's and Hugging
/// Face's ImageFolder: one subfolder per class, named by its label) or a CSV of a path column and a
/// label column (paths relative to the CSV's folder). Images are decoded when a batch needs them.
public struct ImageFileList: LabelledData, Sendable {
    public var paths: [String]
    public var labels: [Int]
    public var classNames: [String]
    public var classCount: Int { classNames.count }

    public init(paths: [String], labels: [Int], classNames: [String]) {
        self.paths = paths
        self.labels = labels
        self.classNames = classNames
    }

    /// Subfolders that give the split, if `folder` has them: `train/`, `validation/` or `val/`,
    /// `test/` (train required).
    public static func splitFolders(of folder: URL) -> (train: URL, validation: URL?, test: URL?)? {
        let fm = FileManager.default
        func dir(_ names: [String]) -> URL? {
            names.map { folder.appendingPathComponent($0) }.first { u in
                var isDir: ObjCBool = false
                return fm.fileExists(atPath: u.path, isDirectory: &isDir) && isDir.boolValue
            }
        }
        guard let train = dir(["train"]) else { return nil }
        return (train, dir(["validation", "val", "valid"]), dir(["test"]))
    }

    /// The class subfolders of `folder` in name order (torchvision's class indices), each with its
    /// image files (by extension; hidden files skipped) in name order. A class folder without
    /// images, or a folder without class folders, is an error naming it.
    public static func folder(_ folder: URL) throws -> ImageFileList {
        let fm = FileManager.default
        let entries: [String]
        do { entries = try fm.contentsOfDirectory(atPath: folder.path) } catch {
            throw DataError(file: folder.path, "cannot list the image folder: \(String(cString: strerror(errno)))")
        }
        let classes = entries.filter { !$0.hasPrefix(".") && isFolder(folder.appendingPathComponent($0)) }.sorted()
        guard !classes.isEmpty else {
            throw DataError(file: folder.path, "no class folders: an image folder holds one subfolder per class (cat/, dog/, ...) with its images")
        }
        var list = ImageFileList(paths: [], labels: [], classNames: classes)
        for (c, name) in classes.enumerated() {
            let classFolder = folder.appendingPathComponent(name)
            let files = ((try? fm.contentsOfDirectory(atPath: classFolder.path)) ?? [])
                .filter { !$0.hasPrefix(".") && ImageDecoder.extensions.contains(($0 as NSString).pathExtension.lowercased()) }.sorted()
            guard !files.isEmpty else {
                throw DataError(file: classFolder.path, "class folder '\(name)' holds no images (\(ImageDecoder.extensions.map { "." + $0 }.joined(separator: ", ")))")
            }
            list.paths += files.map { classFolder.appendingPathComponent($0).path }
            list.labels += [Int](repeating: c, count: files.count)
        }
        return list
    }

    /// A CSV with a path column and a label column; relative paths are taken from the CSV's folder.
    /// Classes are the labels in sorted order.
    public static func csv(_ url: URL, pathColumn: String = "path", labelColumn: String = "label") throws -> ImageFileList {
        var options = LoadOptions(textColumn: pathColumn, labelColumn: labelColumn)
        options.strict = true
        let table = try TextDataset.load(url, options: options)
        let base = url.deletingLastPathComponent()
        let paths = table.texts.map { $0.hasPrefix("/") ? $0 : base.appendingPathComponent($0).path }
        let names = table.labelVocabulary.labels
        let sorted = names.sorted()
        let index = Dictionary(uniqueKeysWithValues: sorted.enumerated().map { ($1, $0) })
        return ImageFileList(paths: paths, labels: table.labels.map { index[names[$0]]! }, classNames: sorted)
    }

    /// A folder (class subfolders) or a CSV file of paths and labels.
    public static func load(_ url: URL) throws -> ImageFileList {
        if isFolder(url) { return try folder(url) }
        guard FileManager.default.fileExists(atPath: url.path) else { throw DataError(file: url.path, "no such file or folder") }
        return try csv(url)
    }

    /// This list with its labels renamed into `classes` (the training split's): examples of a
    /// class `classes` lacks are dropped and returned by name with their counts, for the caller to
    /// report.
    public func relabelled(to classes: [String]) -> (list: ImageFileList, dropped: [String: Int]) {
        let index = Dictionary(uniqueKeysWithValues: classes.enumerated().map { ($1, $0) })
        var out = ImageFileList(paths: [], labels: [], classNames: classes)
        var dropped: [String: Int] = [:]
        for (p, l) in zip(paths, labels) {
            if let c = index[classNames[l]] {
                out.paths.append(p)
                out.labels.append(c)
            } else {
                dropped[classNames[l], default: 0] += 1
            }
        }
        return (out, dropped)
    }

    /// The examples at `indices`, in that order.
    public func subset(_ indices: [Int]) -> ImageFileList {
        ImageFileList(paths: indices.map { paths[$0] }, labels: indices.map { labels[$0] }, classNames: classNames)
    }

    /// Decodes every image once (in parallel), so that an unreadable, truncated or too small file
    /// is reported now, by name, rather than in the middle of training. `minSide`: the smallest
    /// shorter side accepted.
    public func check(minSide: Int) throws {
        let failures = FailureList()
        ThreadPool.shared.parallelFor(paths.count) { i in
            do {
                let image = try ImageDecoder.decode(file: paths[i])
                guard min(image.width, image.height) >= minSide else {
                    throw DataError(file: paths[i], "\(image.width)x\(image.height) pixels is smaller than the \(minSide)-pixel patch on its shorter side")
                }
            } catch {
                failures.add(i, error)
            }
        }
        if let error = failures.first { throw error }
    }

    static func isFolder(_ url: URL) -> Bool {
        var isDir: ObjCBool = false
        return FileManager.default.fileExists(atPath: url.path, isDirectory: &isDir) && isDir.boolValue
    }
}
