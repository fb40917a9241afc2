import Foundation
import SideTuneEngine
import SideTuneFormats
import SideTuneMethods
import SideTuneTrainer
import Testing

/// Every tensor of a safetensors file by name (metadata, which holds the run's random id, aside).
func tensors(_ url: URL) throws -> [String: [Float]] {
    let file = try SafetensorsFile(path: url.path)
    var out: [String: [Float]] = [:]
    for name in file.names { out[name] = try file.floats(name) }
    return out
}

/// Stands for a kill: thrown from the run folder's hook before the change it names.
struct Killed: Error { let at: String }

@Suite(.serialized) struct RunFolderTests {
    /// The changes an uninterrupted run makes to its folder, in order, and its final state.
    func uninterrupted(_ method: MethodKind, epochs: Int) throws -> (changes: [String], folder: URL, report: TrainingReport) {
        let folder = tempFolder()
        let t = try makeTrainer(method, folder: folder, epochs: epochs, dropout: 0.2)
        var changes: [String] = []
        t.beforeRunFolderChange = { changes.append($0) }
        let report = try t.run()
        return (changes, folder, report)
    }

    func expectSameRun(_ a: URL, _ b: URL, sourceLocation: SourceLocation = #_sourceLocation) throws {
        for link in ["last", "best"] {
            let (x, y) = (a.appendingPathComponent(link), b.appendingPathComponent(link))
            // The same epoch (a rewritten epoch's folder may carry a suffix: epoch-0003.1).
            let epoch = { (u: URL) in try FileManager.default.destinationOfSymbolicLink(atPath: u.path).prefix(10) }
            #expect(try epoch(x) == epoch(y), sourceLocation: sourceLocation)
            #expect(try tensors(x.appendingPathComponent("weights.safetensors")) == tensors(y.appendingPathComponent("weights.safetensors")),
                    "\(link) weights", sourceLocation: sourceLocation)
        }
        #expect(try tensors(a.appendingPathComponent("last/optimizer.safetensors"))
                == tensors(b.appendingPathComponent("last/optimizer.safetensors")), sourceLocation: sourceLocation)
    }

    /// A kill before any change of the run folder in epochs 2 and 3 (a file written, the folder
    /// renamed, a link switched, an old epoch removed), then `--resume`, gives the uninterrupted
    /// run's weights and optimizer state bit for bit, and its test accuracy. LST with dropout and
    /// the feature cache: the resumed epoch recomputes the taps and must read them back in bf16,
    /// and the dropout generators must continue where they were.
    @Test func resumeAfterAKillAtAnyChangeIsExact() throws {
        let (changes, reference, report) = try uninterrupted(.lst, epochs: 3)
        let epoch2 = changes.firstIndex { $0.contains("epoch-0002") }!
        #expect(changes.count - epoch2 >= 10, "\(changes)")
        for k in epoch2..<changes.count {
            let folder = tempFolder()
            let t = try makeTrainer(.lst, folder: folder, epochs: 3, dropout: 0.2)
            var seen = 0
            t.beforeRunFolderChange = { what in
                if seen == k { throw Killed(at: what) }
                seen += 1
            }
            #expect(throws: Killed.self) { try t.run() }
            let resumed = try makeTrainer(.lst, folder: folder, epochs: 3, resume: true, dropout: 0.2).run()
            try expectSameRun(reference, folder)
            #expect(resumed.accuracy == report.accuracy && resumed.validationAccuracy == report.validationAccuracy,
                    "killed before \(changes[k])")
            // Only complete epochs named by the links remain.
            let entries = try FileManager.default.contentsOfDirectory(atPath: folder.path).sorted()
            #expect(entries.allSatisfy { ["best", "last"].contains($0) || $0.hasPrefix("epoch-") }, "\(entries)")
        }
    }

    /// A stop requested mid-epoch (SIGINT) ends the run with `TrainingInterrupted`; resuming
    /// gives the uninterrupted run.
    @Test func interruptedRunResumesExactly() throws {
        let (_, reference, _) = try uninterrupted(.last, epochs: 3)
        let folder = tempFolder()
        let t = try makeTrainer(.last, folder: folder, epochs: 3, dropout: 0.2)
        var steps = 0
        t.stopRequested = { steps += 1; return steps > 12 ? SIGINT : nil } // 8 steps per epoch: stops in epoch 2
        do {
            _ = try t.run()
            Issue.record("the run did not stop")
        } catch let e as TrainingInterrupted {
            #expect(e.epoch == 2 && e.lastEpoch == 1 && e.exitCode == 130)
            #expect(e.description.contains("--resume"))
        }
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("run.lock").path))
        _ = try makeTrainer(.last, folder: folder, epochs: 3, resume: true, dropout: 0.2).run()
        try expectSameRun(reference, folder)
    }

    /// --resume refuses a run whose settings, data or files differ, naming what differs.
    @Test func resumeRefusesAnotherRun() throws {
        let folder = tempFolder()
        _ = try makeTrainer(.last, folder: folder, epochs: 3, stopAfter: 1).run()
        do {
            _ = try makeTrainer(.last, folder: folder, epochs: 3, resume: true, learningRate: 1e-2).run()
            Issue.record("a changed learning rate was accepted")
        } catch let e as TrainerError {
            #expect(e.description.contains("learning rate: the run has 0.03, this one 0.01"), "\(e)")
        }
        #expect(throws: TrainerError.self) { try makeTrainer(.last, folder: folder, epochs: 4, resume: true).run() }
        #expect(throws: TrainerError.self) { try makeTrainer(.lst, folder: folder, epochs: 3, resume: true).run() }

        // An optimizer file of another shape (same run and epoch stamps): refused, not read past its end.
        let last = folder.appendingPathComponent("last")
        let optimizerURL = last.appendingPathComponent("optimizer.safetensors")
        let original = try Data(contentsOf: optimizerURL)
        let file = try SafetensorsFile(path: optimizerURL.path)
        var writer = SafetensorsWriter(metadata: file.metadata)
        for name in file.names { try writer.add(name, floats: [1, 2, 3], shape: [3]) }
        try writer.write(to: optimizerURL.path)
        do {
            _ = try makeTrainer(.last, folder: folder, epochs: 3, resume: true).run()
            Issue.record("a resized optimizer state was accepted")
        } catch let e as TrainerError {
            #expect(e.description.contains("has shape [3]"), "\(e)")
        }
        try original.write(to: optimizerURL)

        // A weights file from another run.
        let other = tempFolder()
        _ = try makeTrainer(.last, folder: other, epochs: 3, stopAfter: 1).run()
        let weights = last.appendingPathComponent("weights.safetensors")
        try FileManager.default.removeItem(at: weights)
        try FileManager.default.copyItem(at: other.appendingPathComponent("last/weights.safetensors"), to: weights)
        do {
            _ = try makeTrainer(.last, folder: folder, epochs: 3, resume: true).run()
            Issue.record("another run's weights were accepted")
        } catch let e as TrainerError {
            #expect(e.description.contains("metadata run is"), "\(e)")
        }
    }

    /// A folder holding a run is refused without --resume or --overwrite; --overwrite replaces it
    /// and keeps the user's other files; a file as the output is refused; an older run's layout
    /// cannot be resumed.
    @Test func outputFolderRules() throws {
        let folder = tempFolder()
        _ = try makeTrainer(.linear, folder: folder, epochs: 1).run()
        try Data("mine".utf8).write(to: folder.appendingPathComponent("notes.txt"))
        do {
            _ = try makeTrainer(.linear, folder: folder, epochs: 1).run()
            Issue.record("a second run overwrote the first")
        } catch let e as TrainerError {
            #expect(e.description.contains("holds a run already"), "\(e)")
        }
        let t = try makeTrainer(.linear, folder: folder, epochs: 1)
        var p = t.parameters
        p.overwrite = true
        _ = try Trainer(model: t.model, parameters: p, train: t.train, validation: t.validation, test: t.test,
                        checkpointConfig: t.checkpointConfig).run()
        #expect(FileManager.default.fileExists(atPath: folder.appendingPathComponent("notes.txt").path))

        let file = folder.appendingPathComponent("notes.txt")
        #expect(throws: TrainerError.self) { try makeTrainer(.linear, folder: file, epochs: 1).run() }

        let older = tempFolder()
        try FileManager.default.createDirectory(at: older.appendingPathComponent("last"), withIntermediateDirectories: true)
        try Data("{}".utf8).write(to: older.appendingPathComponent("state.json"))
        do {
            _ = try makeTrainer(.linear, folder: older, epochs: 1, resume: true).run()
            Issue.record("an older layout was resumed")
        } catch let e as TrainerError {
            #expect(e.description.contains("older SideTune"), "\(e)")
        }
    }

    /// The lock refuses a second live run on a folder, and takes over one whose process is gone.
    @Test func lockRefusesASecondLiveRun() throws {
        let folder = tempFolder()
        let lock = try RunLock(folder: folder)
        #expect(throws: TrainerError.self) { try RunLock(folder: folder) }
        #expect(throws: TrainerError.self) { try makeTrainer(.linear, folder: folder, epochs: 1).run() }
        lock.release()

        // A lock left by a process that has exited.
        let gone = Process()
        gone.executableURL = URL(fileURLWithPath: "/bin/true")
        try gone.run()
        gone.waitUntilExit()
        try Data("pid \(gone.processIdentifier)\nhost \(ProcessInfo.processInfo.hostName)\nstart 1\n".utf8)
            .write(to: folder.appendingPathComponent("run.lock"))
        let taken = try RunLock(folder: folder)
        taken.release()
        #expect(!FileManager.default.fileExists(atPath: folder.appendingPathComponent("run.lock").path))
    }

    /// The feature cache's file is unlinked while mapped: nothing is left however the process ends.
    @Test func featureCacheLeavesNoFile() throws {
        let url = tempFolder().appendingPathComponent("taps.bin")
        let cache = try FeatureCache(url: url, lengths: [3, 4], taps: [0], width: 8)
        #expect(!FileManager.default.fileExists(atPath: url.path))
        #expect(cache.byteCount == 7 * 8 * 2)
    }

    /// Training parameters no run can use are refused, each named.
    @Test func nonsenseParametersAreRefused() throws {
        for change in [{ (p: inout TrainingParameters) in p.learningRate = -1 }, { $0.warmupFraction = -1 }, { $0.clipNorm = -1 },
                       { $0.patience = -1 }, { $0.learningRate = .nan }, { $0.batchSize = 0 }, { $0.microBatches = 0 }] {
            var p = TrainingParameters()
            change(&p)
            #expect(throws: TrainerError.self) { try p.validate() }
        }
        #expect(throws: Never.self) { try TrainingParameters().validate() }
    }
}
