//! [`forward_rest_of_link!`](crate::forward_rest_of_link).

/// The `Link` methods a test's link wrapper (a struct with a field `inner`
/// holding the wrapped link) forwards unchanged: everything but `send` and
/// `recv`, which the wrapper writes. Use it inside the `impl Link` block:
/// `test_support::forward_rest_of_link!();`.
#[macro_export]
macro_rules! forward_rest_of_link {
    () => {
        fn local(&self) -> std::net::SocketAddr {
            self.inner.local()
        }
        fn wait(&self, timeout: Option<std::time::Duration>) -> std::io::Result<()> {
            self.inner.wait(timeout)
        }
        fn kick(&self) {
            self.inner.kick()
        }
        fn wake_on_arrival(&self, on: bool) {
            self.inner.wake_on_arrival(on)
        }
        fn close(&self) {
            self.inner.close()
        }
        fn stats(&self) -> soft_rdma::transport::LinkStats {
            self.inner.stats()
        }
        fn mtu(&self) -> Option<u32> {
            self.inner.mtu()
        }
        fn fault_stats(&self) -> Option<soft_rdma::transport::FaultStats> {
            self.inner.fault_stats()
        }
    };
}
