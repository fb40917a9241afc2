import Foundation

/// Stopping a run cleanly on SIGINT or SIGTERM: `install()` makes the first signal a request that
/// the trainer honours between steps (it throws `TrainingInterrupted`, and the run folder keeps its
/// last complete epoch); a second one ends the process at once, after removing this process's run
/// locks. Feature caches need nothing: their files are unlinked while mapped.
public enum Interruption {
    nonisolated(unsafe) private static var sources: [DispatchSourceSignal] = []
    nonisolated(unsafe) private static var signalNumber: Int32 = 0
    private static let lock = NSLock()

    /// The signal asked for, if one came (SIGINT, SIGTERM).
    public static var requested: Int32? {
        lock.lock(); defer { lock.unlock() }
        return signalNumber == 0 ? nil : signalNumber
    }

    /// Asks running trainers to stop after their current step (what the signal handler does).
    public static func request(_ signal: Int32 = SIGINT) {
        lock.lock(); signalNumber = signal; lock.unlock()
    }

    /// Clears a request (tests).
    public static func reset() { lock.lock(); signalNumber = 0; lock.unlock() }

    /// Installs the handlers (once). `message` is printed to stderr on the first signal.
    public static func install(message: String = "stopping after this step (press Ctrl-C again to stop at once)") {
        lock.lock(); defer { lock.unlock() }
        guard sources.isEmpty else { return }
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                if requested != nil {
                    LiveRuns.releaseAll()
                    FileHandle.standardError.write(Data("\nstopped at once; the run folder keeps its last complete epoch\n".utf8))
                    _exit(128 + sig)
                }
                request(sig)
                FileHandle.standardError.write(Data("\n\(message)\n".utf8))
            }
            source.resume()
            sources.append(source)
        }
    }
}

/// Thrown by the trainer when a stop was requested (`Interruption`): where it stopped and what
/// the run folder keeps.
public struct TrainingInterrupted: Error, CustomStringConvertible {
    public let signal: Int32
    public let epoch: Int, step: Int, stepsPerEpoch: Int
    public let folder: URL?
    /// Complete epochs the folder keeps (0: none), and the best of them.
    public let lastEpoch: Int, bestEpoch: Int?

    public var exitCode: Int32 { 128 + signal }

    public var description: String {
        let name = signal == SIGTERM ? "SIGTERM" : (signal == SIGINT ? "SIGINT" : "signal \(signal)")
        var text = "\(name): stopped in epoch \(epoch) after step \(step) of \(stepsPerEpoch)"
        guard let folder else { return text + "; nothing was kept (no --output)" }
        if lastEpoch == 0 { return text + "; \(folder.path) holds no complete epoch yet" }
        text += "; \(folder.path) keeps its last complete epoch, \(lastEpoch)" + (bestEpoch.map { " (best so far: epoch \($0))" } ?? "")
        return text + "; continue with the same command and --resume"
    }
}
