/// The release version, reported in `--version`, the `user-agent` sent upstream and health output.
public enum SwitchyardVersion {
    public static let current = "0.1.0"
}
