import Foundation
import SideTuneCLI

// Progress and result lines reach a log file as they are printed, not when a buffer fills (a
// killed run would lose them).
setvbuf(stdout, nil, _IOLBF, 0)
SideTuneCommand.main()
